"""Attack primitives (rs_guard_ros/adversarial.py): the differentiable command scorer, its
noise-averaged (EOT) version, and ART's PGD within its budget and mask."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_guard_ros import adversarial, attack
from rs_guard_ros.config import from_flat
from rs_guard_ros.guard import Guard


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard.from_config(from_flat({"model.device": "cpu"}))


@pytest.fixture(scope="module")
def scenes(guard):
    return attack.render_scenes(3, attack.DEFAULT_SEED + 2, guard.preprocessor)


def _batch(scenes, idx) -> np.ndarray:
    return np.stack([scenes[i].x.transpose(2, 0, 1) for i in idx])


def test_scorer_gradient_is_finite_and_nonzero(guard, scenes):
    scorer = adversarial.CommandScorer(guard.policy, guard.cfg.commands.table, guard.cfg.commands.names,
                                  scenes[0].instruction)
    x = torch.from_numpy(_batch(scenes, [0, 1])).requires_grad_()
    logits = scorer(x)
    assert logits.shape == (2, len(guard.cfg.commands.names))
    logits[:, guard.cfg.commands.names.index("forward")].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_smoothed_scorer_is_the_base_at_zero_sigma_and_averages_noise_otherwise(guard, scenes):
    base = adversarial.CommandScorer(guard.policy, guard.cfg.commands.table, guard.cfg.commands.names,
                                scenes[0].instruction)
    x = torch.from_numpy(_batch(scenes, [0, 1, 2]))
    torch.manual_seed(0)
    with torch.no_grad():
        expected = torch.log_softmax(base(x), dim=-1)
        at_zero = adversarial.SmoothedScorer(base, 0.0, 3)(x)
        noisy = adversarial.SmoothedScorer(base, 0.5, 8)(x)
    assert torch.allclose(at_zero, expected, atol=1e-5)
    assert torch.allclose(torch.logsumexp(noisy, dim=-1), torch.zeros(3), atol=1e-5)  # log of a distribution
    assert (noisy - expected).abs().max() > 1e-3


@pytest.mark.parametrize("sigma, samples", [(-0.1, 4), (float("nan"), 4), (0.25, 0)])
def test_smoothed_scorer_rejects_bad_arguments(guard, scenes, sigma, samples):
    base = adversarial.CommandScorer(guard.policy, guard.cfg.commands.table, guard.cfg.commands.names, "go to the red box")
    with pytest.raises(ValueError):
        adversarial.SmoothedScorer(base, sigma, samples)


def _toy_classifier(seed: int):
    """A random linear 4-class model on (3, 8, 8) inputs, as an ART classifier (fast budget checks)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    return adversarial.art_classifier(model, (3, 8, 8), 4)


@settings(max_examples=25, deadline=None)
@given(norm=st.sampled_from([2, np.inf]), eps=st.floats(0.01, 3.0), steps=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_pgd_stays_in_its_budget_and_in_the_unit_box(norm, eps, steps, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(3, 3, 8, 8)).astype(np.float32)
    adv = adversarial.pgd(_toy_classifier(seed), x, rng.integers(0, 4, size=3), norm=norm, eps=eps, steps=steps)
    delta = (adv - x).reshape(3, -1)
    size = np.linalg.norm(delta, axis=1) if norm == 2 else np.abs(delta).max(axis=1)
    assert (size <= eps + 1e-4).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0


@settings(max_examples=15, deadline=None)
@given(side=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_patch_changes_nothing_outside_its_mask(side, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(2, 3, 8, 8)).astype(np.float32)
    mask = np.broadcast_to(np.stack([adversarial.patch_mask((8, 8), side, rng) for _ in range(2)]), x.shape).copy()
    adv = adversarial.pgd(_toy_classifier(seed), x, np.array([1, 2]), norm=np.inf, eps=1.0, steps=3, mask=mask)
    assert np.array_equal(adv[mask == 0], x[mask == 0])
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert mask[:, 0].reshape(2, -1).sum(axis=1).tolist() == [side * side] * 2


def test_patch_mask_rejects_a_side_larger_than_the_image():
    with pytest.raises(ValueError, match="side"):
        adversarial.patch_mask((8, 8), 9, np.random.default_rng(0))
