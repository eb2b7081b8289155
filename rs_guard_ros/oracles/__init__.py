"""Oracles: map each generated model output to one command of a fixed set, or UNKNOWN.

The oracle O is part of the base classifier h(x) = O(f(x, instruction)) (docs/guarantee.md).
Three kinds ship: a closed-vocabulary `grammar` (exact on its grammar, eps_O = 0), a
`semantic` one (sentence-embedding similarity, eps_O measured by `calibrate`), and an
`action` one (logits argmax or nearest continuous-action prototype).

Oracles are called on whole batches of noisy-sample outputs, which are mostly repeats
of a few distinct outputs, so every oracle classifies each distinct output once
(`classify_distinct`).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..certify import UNKNOWN_NAME

UNKNOWN = None
KINDS = ("grammar", "semantic", "action")


@runtime_checkable
class Oracle(Protocol):
    """Maps a batch of model outputs to one command name (or UNKNOWN = None) each."""

    def __call__(self, outputs: Sequence[Any]) -> list[str | None]: ...


def classify_distinct(outputs: Sequence[Any], key: Callable[[Any], Hashable],
                      classify: Callable[[list[Any]], list[str | None]]) -> list[str | None]:
    """Run `classify` once on the distinct outputs (by `key`) and spread the labels back.

    A decision's hundreds of outputs are mostly repeats, so this is the oracles' main
    speed-up; `classify` gets the distinct outputs as one list so it can batch them.
    """
    slots: dict[Hashable, int] = {}
    distinct: list[Any] = []
    index: list[int] = []
    for y in outputs:
        k = key(y)
        if k not in slots:
            slots[k] = len(distinct)
            distinct.append(y)
        index.append(slots[k])
    labels = classify(distinct) if distinct else []
    return [labels[i] for i in index]


def check_command_names(commands: Sequence[str], name: str = "commands") -> tuple[str, ...]:
    """Return the command names as a tuple; ValueError if empty, duplicated or not text."""
    names = tuple(commands)
    if not names:
        raise ValueError(f"{name} must name at least one command")
    for c in names:
        if not isinstance(c, str) or not c.strip():
            raise ValueError(f"{name}: command names must be non-empty strings, got {c!r}")
        if c == UNKNOWN_NAME:
            raise ValueError(f"{name}: {UNKNOWN_NAME!r} is reserved and cannot name a command")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ValueError(f"{name}: duplicate command names {duplicates}")
    return names


def vocab_field(vocab: Any, field: str) -> Any:
    """Read `field` ("phrases", "patterns", "prototypes", "prototype") of one command's vocabulary.

    A vocabulary is a mapping with those keys, an object with those attributes (the
    typed configuration), or a plain list of strings meaning its phrases. Missing -> None.
    """
    if isinstance(vocab, Mapping):
        return vocab.get(field)
    if isinstance(vocab, Sequence) and not isinstance(vocab, str):
        return list(vocab) if field == "phrases" else None
    return getattr(vocab, field, None)


def _texts(commands: Mapping[str, Any], field: str) -> dict[str, list[str]]:
    """Collect one text field of every command (absent -> empty list)."""
    out: dict[str, list[str]] = {}
    for name, vocab in commands.items():
        value = vocab_field(vocab, field)
        if isinstance(value, str):
            raise ValueError(f"commands[{name!r}].{field} must be a list of strings, not one string")
        out[name] = list(value or [])
    return out


def make_oracle(kind: str, commands: Mapping[str, Any], **options: Any) -> Oracle:
    """Build the oracle `kind` ("grammar" | "semantic" | "action") for a command set.

    grammar: each command's "phrases" (+ optional "patterns");
    semantic: each command's "prototypes", falling back to its "phrases";
    action: the command order gives the logits index; a command's "prototype" action
    vector (if any command has a non-empty one) makes it a continuous-action oracle.
    `options` go to the class.
    """
    if not isinstance(commands, Mapping) or not commands:
        raise ValueError("commands must be a non-empty mapping of command name -> vocabulary")
    names = check_command_names(list(commands))
    if kind == "grammar":
        from .grammar import GrammarOracle

        patterns = _texts(commands, "patterns")
        return GrammarOracle(_texts(commands, "phrases"), patterns=patterns, **options)
    if kind == "semantic":
        from .semantic import SemanticOracle

        prototypes = _texts(commands, "prototypes")
        phrases = _texts(commands, "phrases")
        return SemanticOracle({c: prototypes[c] or phrases[c] for c in names}, **options)
    if kind == "action":
        from .action import ActionOracle

        vectors = {c: vocab_field(v, "prototype") for c, v in commands.items()}
        vectors = {c: v for c, v in vectors.items() if v is not None and len(v)}
        return ActionOracle(names, prototypes=vectors or None, **options)
    raise ValueError(f"oracle kind must be one of {KINDS}, got {kind!r}")


__all__ = ["KINDS", "UNKNOWN", "UNKNOWN_NAME", "Oracle", "check_command_names",
           "classify_distinct", "make_oracle", "vocab_field"]
