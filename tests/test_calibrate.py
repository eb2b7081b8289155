"""Oracle calibration: label files, confusion matrix, and the eps_O bound (Clopper-Pearson upper)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from rs_guard_ros.oracles import UNKNOWN
from rs_guard_ros.oracles.calibrate import calibrate, parse_action, read_labels, run_calibration
from rs_guard_ros.config import DEMO_COMMANDS

COMMANDS = ["forward", "left", "right", "stop"]
DEMO = {c: {"phrases": list(cmd.phrases)} for c, cmd in DEMO_COMMANDS.items()}
DEMO_CSV = Path(__file__).resolve().parents[1] / "rs_guard_ros" / "oracles" / "data" / "demo_calibration.csv"


def scipy_cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound, computed directly from the Beta quantile."""
    return 1.0 if k == n else float(beta.ppf(1.0 - alpha, k + 1, n - k))


class LookupOracle:
    """A stand-in oracle that answers from a table (unlisted outputs are UNKNOWN)."""

    def __init__(self, table):
        self.table = table

    def __call__(self, outputs):
        return [self.table.get(y) for y in outputs]


LABELS = st.sampled_from([*COMMANDS, UNKNOWN])


@given(pairs=st.lists(st.tuples(LABELS, LABELS), min_size=1, max_size=400),
       alpha=st.sampled_from([1e-3, 0.01, 0.05, 0.2]))
def test_epsilon_is_the_clopper_pearson_upper_bound_of_all_disagreements(pairs, alpha):
    labelled = [(f"output {i}", true) for i, (true, _) in enumerate(pairs)]
    oracle = LookupOracle({f"output {i}": pred for i, (_, pred) in enumerate(pairs)})
    result = calibrate(oracle, labelled, alpha, commands=COMMANDS)
    k = sum(t != p for t, p in pairs)
    assert (result.n, result.errors) == (len(pairs), k)
    assert result.epsilon == pytest.approx(scipy_cp_upper(k, len(pairs), alpha), abs=1e-9)
    committing = sum(p is not None and t != p for t, p in pairs)
    assert result.committing_errors == committing
    assert result.committing_epsilon == pytest.approx(scipy_cp_upper(committing, len(pairs), alpha), abs=1e-9)
    assert result.abstain == sum(t is not None and p is None for t, p in pairs)
    assert result.abstain + result.committing_errors == result.errors


def test_confusion_matrix_rows_are_true_labels_and_columns_predictions():
    labelled = [("a", "left"), ("b", "left"), ("c", None), ("d", "stop"), ("e", "right")]
    oracle = LookupOracle({"a": "left", "b": None, "c": "stop", "d": "stop", "e": "left"})
    result = calibrate(oracle, labelled, 0.05, commands=COMMANDS)
    m = dict(zip(result.labels, result.confusion.tolist()))
    assert result.labels == (*COMMANDS, "UNKNOWN")
    assert m["left"] == [0, 1, 0, 0, 1]
    assert m["UNKNOWN"] == [0, 0, 0, 1, 0]
    assert (result.wrong_command, result.false_command, result.abstain) == (1, 1, 1)
    assert result.error_rate == pytest.approx(3 / 5)


def test_results_render_as_json_and_as_a_table():
    result = calibrate(LookupOracle({"a": "left"}), [("a", "left"), ("b", "stop")], 0.05, commands=COMMANDS)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["epsilon"] == pytest.approx(result.epsilon)
    assert data["confusion"][3][4] == 1  # true stop, predicted UNKNOWN
    table = result.format_table()
    assert all(name in table for name in result.labels)
    assert f"{result.epsilon:.4f}" in table


def test_calibrate_rejects_bad_arguments():
    labelled = [("a", "left")]
    with pytest.raises(ValueError, match="alpha"):
        calibrate(LookupOracle({}), labelled, 1.5)
    with pytest.raises(ValueError, match="labelled"):
        calibrate(LookupOracle({}), [], 0.05)
    with pytest.raises(ValueError, match="oracle returned"):
        calibrate(lambda outputs: [], labelled, 0.05)
    with pytest.raises(ValueError, match="'fly'"):
        calibrate(LookupOracle({"a": "fly"}), labelled, 0.05, commands=COMMANDS)


# ---------------------------------------------------------------- label files

OUTPUT_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(OUTPUT_TEXT, LABELS), min_size=1, max_size=20),
       bom=st.booleans(),
       # csv.writer quotes only the characters of its own line terminator, so a bare "\r"
       # inside an output written with "\n" endings would be unquoted (ambiguous); such files
       # are written with every field quoted.
       style=st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\r\n", csv.QUOTE_ALL), ("\n", csv.QUOTE_ALL)]))
def test_read_labels_round_trips_csv_written_rows(tmp_path, rows, bom, style):
    path = tmp_path / "labels.csv"
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator=style[0], quoting=style[1])
        writer.writerow(["output", "command"])
        writer.writerows([(y, c or "UNKNOWN") for y, c in rows])
    assert read_labels(path, COMMANDS) == rows


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8", newline="")
    return path


@pytest.mark.parametrize("text, message", [
    ("", r"line 1: .* is empty"),
    ("output,label\nturn left,left\n", r"line 1: column 'command' is missing"),
    ("command\nleft\n", r"line 1: column 'output' is missing"),
    ("output,command\n", r"no labelled outputs"),
    ("output,command\nturn left,left\nfly,fly\n", r"line 3: .*'fly'"),
    ("output,command\nturn left, now,left\n", r"line 2: 3 fields"),
    ('output,command\n"multi\nline",left\nstop,\n', r"line 4: column 'command' is empty"),
    ('output,command\n"unterminated,left\n', r"line \d+: malformed CSV"),
])
def test_malformed_label_files_raise_naming_the_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_labels(write(tmp_path, text), COMMANDS)


def test_header_may_reorder_columns_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, 'note,command,output\r\nx,left,"turn left, now"\r\n\r\ny,UNKNOWN,""\r\n')
    assert read_labels(path, COMMANDS) == [("turn left, now", "left"), ("", UNKNOWN)]


# ---------------------------------------------------------------- end to end


def test_shipped_demo_set_is_large_and_grammar_never_commits_an_error_on_it():
    labelled = read_labels(DEMO_CSV, COMMANDS)
    assert len(labelled) >= 300
    shipped = {(p, c) for c, cmd in DEMO_COMMANDS.items() for p in cmd.phrases}
    assert shipped <= set(labelled)
    result = run_calibration("grammar", DEMO_CSV, DEMO, 0.001)
    assert result.n == len(labelled)
    assert result.committing_errors == 0


def test_action_labels_are_read_as_numbers(tmp_path):
    path = write(tmp_path, 'output,command\n"0.1, 2.0 -1 0.5",left\n3 0 0 0,forward\n"go",UNKNOWN\n'
                           "0 0 nan 0,stop\n")
    result = run_calibration("action", path, DEMO, 0.05)
    assert (result.n, result.errors, result.abstain) == (4, 1, 1)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=6),
       st.sampled_from([" ", ",", ", ", "\t"]))
def test_parse_action_reads_separated_numbers(values, sep):
    text = sep.join(repr(v) for v in values)
    assert np.array_equal(parse_action(text), np.array(values))
