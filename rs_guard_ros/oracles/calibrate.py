"""Measure an oracle's error bound eps_O on a labelled set of model outputs (docs/guarantee.md §5).

The certificate assumes P[Ô(y) != O(y)] <= eps_O, where O is the ideal oracle (here:
the human labels) and Ô the practical one. `calibrate` counts every disagreement and
takes the one-sided Clopper-Pearson UPPER bound of its rate at level alpha_O; the
certificate then holds with probability >= 1 - alpha - alpha_O.

Why every disagreement, and the breakdown. p_true(c) >= p_observed(c) - eps_O needs
only the disagreements that can *inflate* the observed count of a command: Ô says a
command that O does not ("wrong command": O says another command; "false command": O
says UNKNOWN). An *abstention* (Ô says UNKNOWN, O a command) only lowers counts, so it
costs availability, not safety. Bounding all disagreements (P[Ô != O]) is the
conservative eps_O to configure; the table also reports the committing-error bound,
which is the tighter quantity the argument strictly needs, and the abstention rate.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..certify import check_probability, cp_upper
from . import UNKNOWN, UNKNOWN_NAME, Oracle, make_oracle

_NUMBER_SEPARATORS = re.compile(r"[\s,]+")


def _header(row: list[str]) -> tuple[int, int]:
    """Column indices of 'output' and 'command' in the header row (line 1)."""
    names = [h.strip().lower() for h in row]
    for col in ("output", "command"):
        if names.count(col) != 1:
            found = "missing" if col not in names else "repeated"
            raise ValueError(f"line 1: column {col!r} is {found} in the header {row!r} "
                             f"(expected 'output,command')")
    return names.index("output"), names.index("command")


def _label(text: str, commands: frozenset[str] | None, line: int) -> str | None:
    """A command cell: 'UNKNOWN' -> None, else a command name (checked when `commands` is given)."""
    name = text.strip()
    if name == UNKNOWN_NAME:
        return UNKNOWN
    if not name:
        raise ValueError(f"line {line}: column 'command' is empty (use {UNKNOWN_NAME} for no command)")
    if commands is not None and name not in commands:
        raise ValueError(f"line {line}: column 'command': {name!r} is not one of "
                         f"{sorted(commands)} or {UNKNOWN_NAME}")
    return name


def read_labels(path: str | Path, commands: Iterable[str] | None = None) -> list[tuple[str, str | None]]:
    """Read a labelled CSV with header `output,command` into (output, command or None) pairs.

    UTF-8 (a BOM is accepted), any line endings, RFC 4180 quoting (outputs may contain
    commas, quotes and newlines). Outputs are kept verbatim; the command cell is
    stripped. Blank lines are skipped. Errors name the line (the record's first line).
    """
    known = frozenset(commands) if commands is not None else None
    if known is not None and UNKNOWN_NAME in known:
        raise ValueError(f"commands: {UNKNOWN_NAME!r} is reserved and cannot name a command")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"line 1: {str(path)!r} is empty (expected the header 'output,command')")
            out_col, cmd_col = _header(header)
            pairs = []
            start = reader.line_num + 1
            for row in reader:
                if row:
                    if len(row) != len(header):
                        raise ValueError(f"line {start}: {len(row)} fields, the header has {len(header)} "
                                         f"(quote outputs that contain commas)")
                    pairs.append((row[out_col], _label(row[cmd_col], known, start)))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise ValueError(f"line {reader.line_num}: malformed CSV: {exc}") from exc
    if not pairs:
        raise ValueError(f"{str(path)!r} has a header but no labelled outputs")
    return pairs


def _rate(k: int, n: int) -> float:
    """Observed rate k/n (n >= 1 is guaranteed by `calibrate`)."""
    return k / n


@dataclass(frozen=True)
class CalibrationResult:
    """Confusion matrix (rows: true label, columns: predicted; UNKNOWN last) and eps_O."""

    labels: tuple[str, ...]  # command names, then UNKNOWN_NAME
    confusion: np.ndarray  # int, shape (len(labels), len(labels))
    alpha: float
    n: int = field(init=False)
    errors: int = field(init=False)  # every disagreement: the count eps_O bounds
    wrong_command: int = field(init=False)  # true command c, predicted another command
    false_command: int = field(init=False)  # true UNKNOWN, predicted a command
    abstain: int = field(init=False)  # true command, predicted UNKNOWN (safe, costs availability)

    def __post_init__(self) -> None:
        m = self.confusion
        unknown = len(self.labels) - 1
        set_ = object.__setattr__  # frozen dataclass: derived figures set once here
        set_(self, "n", int(m.sum()))
        set_(self, "errors", int(m.sum() - np.trace(m)))
        set_(self, "wrong_command", int(m[:unknown, :unknown].sum() - np.trace(m[:unknown, :unknown])))
        set_(self, "false_command", int(m[unknown, :unknown].sum()))
        set_(self, "abstain", int(m[:unknown, unknown].sum()))

    @property
    def error_rate(self) -> float:
        """Observed rate of all disagreements."""
        return _rate(self.errors, self.n)

    @property
    def epsilon(self) -> float:
        """eps_O to configure: Clopper-Pearson upper bound of the disagreement rate at alpha."""
        return cp_upper(self.errors, self.n, self.alpha)

    @property
    def committing_errors(self) -> int:
        """Disagreements that can inflate a command's count: a command O does not give."""
        return self.wrong_command + self.false_command

    @property
    def committing_epsilon(self) -> float:
        """Clopper-Pearson upper bound of the committing-error rate at alpha (the tighter bound)."""
        return cp_upper(self.committing_errors, self.n, self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "labels": list(self.labels), "confusion": self.confusion.tolist(),
            "n": self.n, "alpha": self.alpha, "errors": self.errors, "error_rate": self.error_rate,
            "epsilon": self.epsilon, "wrong_command": self.wrong_command,
            "false_command": self.false_command, "abstain": self.abstain,
            "abstain_rate": _rate(self.abstain, self.n),
            "committing_errors": self.committing_errors,
            "committing_error_rate": _rate(self.committing_errors, self.n),
            "committing_epsilon": self.committing_epsilon,
        }

    def format_table(self) -> str:
        """Text rendering of the confusion matrix and the figures."""
        width = max(len("true \\ predicted"), *(len(s) for s in self.labels))
        cell = max(7, *(len(s) for s in self.labels))
        lines = ["true \\ predicted".ljust(width) + "".join(s.rjust(cell + 1) for s in self.labels)]
        for name, row in zip(self.labels, self.confusion):
            lines.append(name.ljust(width) + "".join(str(v).rjust(cell + 1) for v in row))
        lines += [
            "",
            f"n = {self.n}, alpha = {self.alpha:g}",
            f"disagreements: {self.errors}/{self.n} = {self.error_rate:.4f}  "
            f"-> eps_O = {self.epsilon:.4f} (Clopper-Pearson upper bound: the oracle_error to configure)",
            f"  wrong command (true c, predicted c' != c): {self.wrong_command}",
            f"  false command (true UNKNOWN, predicted a command): {self.false_command}",
            f"  abstain (true command, predicted UNKNOWN; safe): {self.abstain} "
            f"= {_rate(self.abstain, self.n):.4f}",
            f"committing errors: {self.committing_errors}/{self.n} = "
            f"{_rate(self.committing_errors, self.n):.4f} -> upper bound {self.committing_epsilon:.4f}",
        ]
        if self.epsilon >= 0.5:
            lines.append("eps_O >= 0.5: no command can ever be certified with this bound")
        return "\n".join(lines)


def calibrate(oracle: Oracle, labelled: Sequence[tuple[Any, str | None]], alpha: float,
              commands: Sequence[str] | None = None) -> CalibrationResult:
    """Run `oracle` on the labelled outputs (one batch) and bound its disagreement rate.

    `commands` orders the confusion matrix; by default, the order in which command
    names first appear among the labels and the predictions.
    """
    alpha = check_probability(alpha, "alpha")
    if not labelled:
        raise ValueError("labelled must hold at least one (output, command) pair")
    outputs = [y for y, _ in labelled]
    truth = [c for _, c in labelled]
    predicted = list(oracle(outputs))
    if len(predicted) != len(outputs):
        raise ValueError(f"oracle returned {len(predicted)} labels for {len(outputs)} outputs")
    names = list(commands or [])
    for c in truth + predicted:
        if c is not UNKNOWN and c not in names:
            if commands is not None:
                raise ValueError(f"label {c!r} is not one of the commands {list(commands)}")
            names.append(c)
    index = {c: i for i, c in enumerate(names)}
    unknown = len(names)
    confusion = np.zeros((unknown + 1, unknown + 1), dtype=np.int64)
    for t, p in zip(truth, predicted):
        confusion[index.get(t, unknown), index.get(p, unknown)] += 1
    return CalibrationResult(tuple(names) + (UNKNOWN_NAME,), confusion, alpha)


def parse_action(text: str) -> Any:
    """An action-oracle output read from a label file: whitespace/comma separated numbers.

    Text that is not a list of numbers stays text, which the action oracle maps to UNKNOWN.
    """
    fields = [f for f in _NUMBER_SEPARATORS.split(text.strip()) if f]
    try:
        return np.array([float(f) for f in fields]) if fields else text
    except ValueError:
        return text


def run_calibration(kind: str, labels_path: str | Path, commands_config: Mapping[str, Any],
                    alpha: float, **oracle_options: Any) -> CalibrationResult:
    """Build oracle `kind` for `commands_config`, read the labels and calibrate (the CLI's entry point)."""
    oracle = make_oracle(kind, commands_config, **oracle_options)
    labelled = read_labels(labels_path, commands_config.keys())
    if kind == "action":
        labelled = [(parse_action(y), c) for y, c in labelled]
    return calibrate(oracle, labelled, alpha, commands=list(commands_config))
