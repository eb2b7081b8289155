"""Closed-vocabulary oracle: an output is a command only if it IS one of its phrases.

Exact on its grammar (eps_O = 0 for outputs inside it): after a fixed
normalisation the text must equal a configured phrase, or fully match one of the
command's regular expressions; anything else, including anything ambiguous, is UNKNOWN.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from . import UNKNOWN, check_command_names, classify_distinct

_DROPPED = str.maketrans({",": " ", ".": " ", "!": " "})
_NOT_TEXT = object()  # one cache key for every non-string output (all are UNKNOWN)


def _is_edge(ch: str) -> bool:
    """True for characters stripped from both ends: whitespace and punctuation but '?'.

    A question mark is kept on purpose: "turn left?" asks, it does not command, so it
    must not normalise to the command "turn left" (fail closed).
    """
    return ch.isspace() or (ch != "?" and unicodedata.category(ch).startswith("P"))


def normalize(text: str) -> str:
    """Canonical form of an output: NFKC, lower case, no , . !, trimmed, single spaces."""
    t = unicodedata.normalize("NFKC", text).lower().translate(_DROPPED)
    start, end = 0, len(t)
    while start < end and _is_edge(t[start]):
        start += 1
    while end > start and _is_edge(t[end - 1]):
        end -= 1
    return " ".join(t[start:end].split())


def _phrase_table(phrases: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Map each normalised phrase to its command; a phrase claimed twice is a config error."""
    table: dict[str, str] = {}
    for command, texts in phrases.items():
        if isinstance(texts, str):
            raise ValueError(f"phrases[{command!r}] must be a list of strings, not one string")
        for phrase in texts:
            if not isinstance(phrase, str) or not normalize(phrase):
                raise ValueError(f"phrases[{command!r}]: {phrase!r} is not a non-empty phrase")
            key = normalize(phrase)
            owner = table.setdefault(key, command)
            if owner != command:
                raise ValueError(f"phrase {phrase!r} (normalised {key!r}) is claimed by both "
                                 f"commands {owner!r} and {command!r}")
    return table


def _compile(patterns: Mapping[str, Sequence[str]]) -> list[tuple[str, re.Pattern[str]]]:
    """Compile every command's regular expressions; a bad one is a ValueError naming it."""
    compiled = []
    for command, texts in patterns.items():
        if isinstance(texts, str):
            raise ValueError(f"patterns[{command!r}] must be a list of strings, not one string")
        for text in texts:
            try:
                compiled.append((command, re.compile(text)))
            except (re.error, TypeError) as exc:
                raise ValueError(f"patterns[{command!r}]: invalid regular expression {text!r}: {exc}") from exc
    return compiled


class GrammarOracle:
    """Exact matcher over a closed command vocabulary (phrases and full-match patterns).

    Patterns are matched with re.fullmatch against the *normalised* text, so write them
    in lower case without commas, periods or exclamation marks. An output matched by two
    commands (a phrase of one and a pattern of another, or two patterns) is UNKNOWN.
    """

    def __init__(self, phrases: Mapping[str, Sequence[str]],
                 patterns: Mapping[str, Sequence[str]] | None = None) -> None:
        patterns = dict(patterns or {})
        self.commands = check_command_names(list(phrases) + [c for c in patterns if c not in phrases])
        self._table = _phrase_table(phrases)
        self._patterns = _compile(patterns)
        if not self._table and not self._patterns:
            raise ValueError("phrases/patterns: the grammar has no phrase and no pattern")
        self._check_patterns_against_phrases()

    def _check_patterns_against_phrases(self) -> None:
        """A phrase of one command matched by another command's pattern is a config error."""
        for phrase, owner in self._table.items():
            for command, pattern in self._patterns:
                if command != owner and pattern.fullmatch(phrase):
                    raise ValueError(f"phrase {phrase!r} of command {owner!r} is also matched by "
                                     f"pattern {pattern.pattern!r} of command {command!r}")

    def classify(self, output: Any) -> str | None:
        """The command of one output, or UNKNOWN (non-text, empty, unmatched or ambiguous)."""
        if not isinstance(output, str):
            return UNKNOWN
        text = normalize(output)
        if not text:
            return UNKNOWN
        matches = {c for c, pattern in self._patterns if pattern.fullmatch(text)}
        if text in self._table:
            matches.add(self._table[text])
        return matches.pop() if len(matches) == 1 else UNKNOWN

    def __call__(self, outputs: Sequence[Any]) -> list[str | None]:
        """Classify a batch, normalising each distinct output once."""
        return classify_distinct(outputs, lambda y: y if isinstance(y, str) else _NOT_TEXT,
                                 lambda ys: [self.classify(y) for y in ys])
