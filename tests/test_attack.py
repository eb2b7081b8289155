"""Tests of the attack evaluation (rs_guard_ros/attack.py): surrogates, PGD budgets, verdicts, CLI."""
import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_scorer_gradient_is_finite_and_nonzero(guard, scenes):
    scorer = attack.CommandScorer(guard.policy, guard.cfg.commands.table, guard.cfg.commands.names,
                                  scenes[0].instruction)
    x = torch.from_numpy(_batch(scenes, [0, 1])).requires_grad_()
    logits = scorer(x)
    assert logits.shape == (2, len(guard.cfg.commands.names))
    logits[:, guard.cfg.commands.names.index("forward")].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_smoothed_scorer_is_the_base_at_zero_sigma_and_averages_noise_otherwise(guard, scenes):
    base = attack.CommandScorer(guard.policy, guard.cfg.commands.table, guard.cfg.commands.names,
                                scenes[0].instruction)
    x = torch.from_numpy(_batch(scenes, [0, 1, 2]))
    torch.manual_seed(0)
    with torch.no_grad():
        expected = torch.log_softmax(base(x), dim=-1)
        at_zero = attack.SmoothedScorer(base, 0.0, 3)(x)
        noisy = attack.SmoothedScorer(base, 0.5, 8)(x)
    assert torch.allclose(at_zero, expected, atol=1e-5)
    assert torch.allclose(torch.logsumexp(noisy, dim=-1), torch.zeros(3), atol=1e-5)  # log of a distribution
    assert (noisy - expected).abs().max() > 1e-3


@pytest.mark.parametrize("sigma, samples", [(-0.1, 4), (float("nan"), 4), (0.25, 0)])
def test_smoothed_scorer_rejects_bad_arguments(guard, scenes, sigma, samples):
    base = attack.CommandScorer(guard.policy, guard.cfg.commands.table, guard.cfg.commands.names, "go to the red box")
    with pytest.raises(ValueError):
        attack.SmoothedScorer(base, sigma, samples)


def _toy_classifier(seed: int):
    """A random linear 4-class model on (3, 8, 8) inputs, as an ART classifier (fast budget checks)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    return attack.art_classifier(model, (3, 8, 8), 4)


@settings(max_examples=25, deadline=None)
@given(norm=st.sampled_from([2, np.inf]), eps=st.floats(0.01, 3.0), steps=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_pgd_stays_in_its_budget_and_in_the_unit_box(norm, eps, steps, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(3, 3, 8, 8)).astype(np.float32)
    adv = attack.pgd(_toy_classifier(seed), x, rng.integers(0, 4, size=3), norm=norm, eps=eps, steps=steps)
    delta = (adv - x).reshape(3, -1)
    size = np.linalg.norm(delta, axis=1) if norm == 2 else np.abs(delta).max(axis=1)
    assert (size <= eps + 1e-4).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0


@settings(max_examples=15, deadline=None)
@given(side=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_patch_changes_nothing_outside_its_mask(side, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(2, 3, 8, 8)).astype(np.float32)
    mask = np.broadcast_to(np.stack([attack.patch_mask((8, 8), side, rng) for _ in range(2)]), x.shape).copy()
    adv = attack.pgd(_toy_classifier(seed), x, np.array([1, 2]), norm=np.inf, eps=1.0, steps=3, mask=mask)
    assert np.array_equal(adv[mask == 0], x[mask == 0])
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert mask[:, 0].reshape(2, -1).sum(axis=1).tolist() == [side * side] * 2


def test_patch_mask_rejects_a_side_larger_than_the_image():
    with pytest.raises(ValueError, match="side"):
        attack.patch_mask((8, 8), 9, np.random.default_rng(0))


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
