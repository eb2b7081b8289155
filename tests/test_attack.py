"""Tests of the attack evaluation (rs_guard_ros/attack.py): scorer agreement, attack power, verdicts, CLI."""
import csv
import json

import numpy as np
import pytest

from rs_guard_ros import attack
from rs_guard_ros.config import from_flat
from rs_guard_ros.guard import Decision, Guard

AGREEMENT_MIN = 0.8  # the scorer's argmax must match greedy generation + grammar on >= 80 % of clean frames


@pytest.fixture(scope="module")
def guard() -> Guard:
    """The demo gate, with a small sample budget so decisions stay fast in tests."""
    return Guard.from_config(from_flat({"model.device": "cpu", "smoothing.n_max": 300}))


@pytest.fixture(scope="module")
def scenes(guard):
    """Held-out scenes over all four commands (forward included, so agreement covers every class)."""
    return attack.render_scenes(12, attack.DEFAULT_SEED + 1, guard.preprocessor,
                                truths=("forward", "stop", "left", "right"))


def _batch(scenes, idx) -> np.ndarray:
    return np.stack([scenes[i].x.transpose(2, 0, 1) for i in idx])


def test_scorer_argmax_agrees_with_greedy_generation_and_grammar_on_clean_frames(guard, scenes):
    ev = attack.Evaluator(guard, steps=1, eot_samples=1, seed=0)
    agree = 0
    for instruction, idx in attack._by_instruction(scenes).items():
        x = _batch(scenes, idx)
        _, oracle_labels = attack.undefended_labels(guard.policy, guard.oracle, x, instruction)
        agree += sum(a == b for a, b in zip(ev.scorer_labels(x, instruction), oracle_labels))
    assert agree / len(scenes) >= AGREEMENT_MIN


def test_targeted_l2_pgd_at_a_large_budget_fools_the_undefended_vla(guard, scenes):
    picked = [i for i, s in enumerate(scenes) if s.truth != attack.TARGET][:4]
    chosen = [scenes[i] for i in picked]
    ev = attack.Evaluator(guard, steps=20, eot_samples=1, seed=0)
    x_adv = ev.attack(chosen, attack.AttackSpec("l2", 6.0), "base", [attack.TARGET] * len(chosen))
    fooled = 0
    for instruction, idx in attack._by_instruction(chosen).items():
        _, labels = attack.undefended_labels(guard.policy, guard.oracle, x_adv[idx], instruction)
        fooled += labels.count(attack.TARGET)
    assert fooled >= 3


def _decision(command: str, certified: bool, radius: float = 0.4) -> Decision:
    return Decision(command=command if certified else "stop", certified=certified, label=command, radius=radius,
                    radius_camera=radius, p_lower=0.9 if certified else 0.4, n_used=100, reason="test")


def test_guarantee_check_flags_a_certified_flip_and_nothing_else():
    clean = _decision("left", True)
    assert attack.guarantee_violated(clean, _decision("forward", True))
    assert not attack.guarantee_violated(clean, _decision("left", True, radius=0.1))
    assert not attack.guarantee_violated(clean, _decision("forward", False))  # abstain is always allowed
    assert not attack.guarantee_violated(_decision("left", False), _decision("forward", True))  # nothing was certified


def test_outcome_separates_correct_abstain_and_wrong():
    assert attack.outcome(_decision("stop", True), "stop") == "correct"
    assert attack.outcome(_decision("stop", False), "stop") == "abstain"  # publishes "stop", but uncertified
    assert attack.outcome(_decision("forward", True), "left") == "wrong"


def test_parse_attacks_rejects_unknown_names():
    assert [s.kind for s in attack.parse_attacks(["linf"])] == ["linf", "linf"]
    with pytest.raises(ValueError, match="--attacks"):
        attack.parse_attacks(["fgsm"])


def test_default_attack_config_is_the_demo_gate():
    args = attack_parser().parse_args(["--out", "x", "--smoothing.alpha", "0.01"])
    cfg = attack.attack_config(args)
    assert (cfg.smoothing.n_max, cfg.smoothing.sigma, cfg.smoothing.alpha, cfg.smoothing.mode) == \
        (1000, 0.25, 0.01, "sequential")


def attack_parser():
    """`rs-guard attack`'s own flags plus one dotted config flag, as cli.py adds them."""
    import argparse

    parser = argparse.ArgumentParser()
    attack.add_attack_arguments(parser)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--smoothing.alpha", dest="smoothing.alpha", type=float, default=None)
    return parser


def test_tiny_run_writes_csv_json_and_markdown(guard, tmp_path):
    args = attack_parser().parse_args(["--scenes", "2", "--steps", "2", "--eot-samples", "2", "--attacks", "linf",
                                       "--out", str(tmp_path), "--no-progress"])
    summary = attack.run_attack(args, guard)
    with (tmp_path / "attack.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == attack.CSV_FIELDS
    assert len(rows) == 2 * (1 + 2 * len(attack.MODES))  # clean + 2 budgets x 2 modes, per scene
    saved = json.loads((tmp_path / "attack.json").read_text())
    assert saved["scenes"] == 2 and len(saved["table"]) == 1 + 2 * len(attack.MODES)
    assert {"undefended_success_pct", "guarded_correct_pct", "guarded_abstain_pct", "guarded_wrong_pct"} \
        <= set(saved["table"][0])
    assert saved["guarantee"]["pairs"] <= 2 and summary["guarantee"] == saved["guarantee"]
    table = (tmp_path / "attack.md").read_text()
    assert "| attack | budget | mode | undefended success % |" in table and "| linf | 16/255 | eot |" in table


def test_cli_reports_a_bad_scene_count(capsys, tmp_path):
    from rs_guard_ros import cli

    assert cli.main(["attack", "--scenes", "0", "--out", str(tmp_path)]) == 2
    assert "--scenes" in capsys.readouterr().err
