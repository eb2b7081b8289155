"""Attack primitives for a text-generating VLA: a differentiable command classifier and ART's PGD.

A text-generating VLA has no logits over commands, so attacks run against a
differentiable surrogate, `CommandScorer`: command c's logit is
log sum_{phrase of c} P(phrase tokens, end | image, prompt) by teacher forcing. Its argmax
agrees with greedy generation + grammar oracle on nearly every clean frame (tested), so a
perturbation that moves the scorer moves the real model; success is always judged on the
real model, never on the scorer. `SmoothedScorer` is its expectation over Gaussian noise
(Salman et al. 2019, SmoothAdv): PGD on it is the adaptive attack on the smoothed model.

`pgd` is IBM's Adversarial Robustness Toolbox `ProjectedGradientDescentPyTorch`, targeted,
in l2 or l-inf, optionally under a mask (a patch). Used by `rs-guard attack`
(rs_guard_ros.attack) and the closed-loop attacker (rs_guard_ros.sim.attacker). Importing
this module does not load torch.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from .policies.transformers_policy import TransformersPolicy


# ----------------------------------------------------------------------------- surrogates
@functools.cache
def _surrogates() -> dict[str, type]:
    """CommandScorer and SmoothedScorer, defined on first use: they subclass torch.nn.Module, and
    importing this module (the CLI parser does) must not load torch."""
    import inspect

    import torch

    class CommandScorer(torch.nn.Module):
        """Differentiable command classifier around a text-generating VLA (teacher forcing).

        Input x: (B, 3, H, W) in [0, 1], the model input the gate smooths. Output: (B, K) logits,
        logit_c = log sum_{p in phrases(c)} P(p, end-of-text | x, instruction).
        """

        def __init__(self, policy: TransformersPolicy, table: Mapping[str, Any], names: Sequence[str],
                     instruction: str) -> None:
            super().__init__()
            if not names:
                raise ValueError("names must list at least one command")
            missing = [n for n in names if not getattr(table.get(n), "phrases", ())]
            if missing:
                raise ValueError(f"table: commands {missing} have no phrases to score")
            self.policy, self.names, self.instruction = policy, tuple(names), instruction
            self.model = policy.model  # a registered submodule, so .to()/.eval() reach it
            # Recent transformers call the key/value cache `cache`, older versions `past_key_values`.
            self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
                else "past_key_values"
            tokenizer = policy.processor.tokenizer
            phrases = [(k, tokenizer(p, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
                       for k, name in enumerate(names) for p in table[name].phrases]
            length = max(len(ids) for _, ids in phrases)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            device = policy.device
            self.register_buffer("tokens", torch.tensor([ids + [pad] * (length - len(ids)) for _, ids in phrases],
                                                        device=device))
            self.register_buffer("token_mask", torch.tensor([[1.0] * len(ids) + [0.0] * (length - len(ids))
                                                             for _, ids in phrases], device=device))
            # (K, P) 0 / -inf: adds each phrase's log-probability into its command's logsumexp.
            member = torch.full((len(names), len(phrases)), float("-inf"), device=device)
            for j, (k, _) in enumerate(phrases):
                member[k, j] = 0.0
            self.register_buffer("member", member)

        def phrase_logprobs(self, x: torch.Tensor) -> torch.Tensor:
            """(B, P) log P(phrase + end | x, instruction).

            The prompt (with the image) runs once per frame; its key/value cache is then repeated
            for the P phrases, which are scored in one more pass over their few tokens only.
            """
            batch, count = x.shape[0], self.tokens.shape[0]
            # Cloned: the policy may have cached these under inference_mode, unusable by autograd.
            prompt = {k: v.clone() for k, v in self.policy.prompts(self.instruction, batch).items()}
            first = self.model(**prompt, pixel_values=self.policy.normalize(x), use_cache=True)
            cache = getattr(first, self.cache_arg)
            cache.batch_repeat_interleave(count)
            tokens = self.tokens.repeat(batch, 1)
            attention = torch.cat([prompt["attention_mask"].repeat_interleave(count, dim=0),
                                   torch.ones_like(tokens)], dim=1)
            rest = self.model(input_ids=tokens[:, :-1], attention_mask=attention[:, :-1], **{self.cache_arg: cache})
            # The prompt's last position predicts the first phrase token, phrase token t the one after it.
            logits = torch.cat([first.logits[:, -1:].repeat_interleave(count, dim=0), rest.logits], dim=1)
            picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            return (picked * self.token_mask.repeat(batch, 1)).sum(-1).view(batch, count)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(B, K) command logits (log of each command's total phrase probability)."""
            return torch.logsumexp(self.phrase_logprobs(x).unsqueeze(1) + self.member, dim=-1)

    class SmoothedScorer(torch.nn.Module):
        """EOT surrogate of the smoothed classifier: log mean_m softmax(scorer(x + eps_m)), eps ~ N(0, sigma^2 I).

        PGD on it is SmoothAdv's attack on the smoothed soft classifier (Salman et al. 2019, §3);
        fresh noise at every call, made on the input's device (unclipped, as the gate adds it).
        """

        def __init__(self, scorer: CommandScorer, sigma: float, samples: int) -> None:
            super().__init__()
            if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
                raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
            if not isinstance(samples, int) or samples < 1:
                raise ValueError(f"samples must be a positive int, got {samples!r}")
            self.scorer, self.sigma, self.samples = scorer, float(sigma), samples

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(B, K) log of the Monte-Carlo smoothed class probabilities."""
            noisy = x.unsqueeze(1) + self.sigma * torch.randn((x.shape[0], self.samples, *x.shape[1:]),
                                                              device=x.device, dtype=x.dtype)
            probs = torch.softmax(self.scorer(noisy.flatten(0, 1)), dim=-1).view(x.shape[0], self.samples, -1)
            return torch.log(probs.mean(dim=1).clamp_min(1e-12))

    return {"CommandScorer": CommandScorer, "SmoothedScorer": SmoothedScorer}


def __getattr__(name: str) -> Any:
    """Module attributes CommandScorer / SmoothedScorer, built lazily (PEP 562)."""
    if name in ("CommandScorer", "SmoothedScorer"):
        return _surrogates()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def patch_mask(shape: tuple[int, int], side: int, rng: np.random.Generator) -> np.ndarray:
    """(1, H, W) float mask: ones on a side x side square at a random place, zeros elsewhere."""
    height, width = shape
    if not 1 <= side <= min(height, width):
        raise ValueError(f"patch side must be in 1..{min(height, width)}, got {side}")
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    mask = np.zeros((1, height, width), dtype=np.float32)
    mask[:, top:top + side, left:left + side] = 1.0
    return mask


def art_classifier(model: Any, input_shape: tuple[int, ...], classes: int) -> Any:
    """`model` (logits) as an ART PyTorchClassifier on [0, 1] inputs, on the model's device."""
    import torch
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=input_shape,
                             nb_classes=classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def pgd(classifier: Any, x: np.ndarray, target: np.ndarray, *, norm: float, eps: float, steps: int,
        mask: np.ndarray | None = None) -> np.ndarray:
    """Targeted PGD (ART) within an l2 / l-inf ball of radius eps (and `mask`), inputs kept in [0, 1].

    Step size 2.5 eps / steps (Madry et al. 2018); for a patch (eps >= 1) a fixed 0.1 per step
    of l-inf sign gradient.
    """
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    step = 0.1 if mask is not None and eps >= 1 else 2.5 * eps / steps
    attack = ProjectedGradientDescentPyTorch(classifier, norm=norm, eps=eps, eps_step=step, max_iter=steps,
                                             targeted=True, batch_size=max(1, len(x)), verbose=False)
    return attack.generate(x.astype(np.float32), y=target, mask=mask).astype(np.float32)
