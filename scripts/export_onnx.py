#!/usr/bin/env python3
"""Export a LLaVA-style VLA (the demo VLA) to an ONNX policy graph for OnnxPolicy.

    python scripts/export_onnx.py --model rs_guard_ros/models/demo_vla --out demo_vla.onnx

The graph follows the contract in rs_guard_ros/policies/onnx_policy.py: inputs
`pixel_values` (B, 3, H, W) raw noisy frames (the processor's mean/std normalisation is
inside the graph) and `input_ids` (B, T) of the prompt; output `token_ids` (B, N), greedy
decoding unrolled for N = --max-new-tokens steps. There is no KV cache: every step re-runs
the language model on the whole sequence, which is cheap for a tiny model and keeps the
graph a plain feed-forward one. Rows that emitted EOS continue with the pad token, as
Hugging Face generate() does. The tokenizer / processor files are copied beside the graph.
Batch size and prompt length are dynamic; the image size is static.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

# Generation settings that would make HF generate() differ from plain argmax decoding.
_NON_GREEDY = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": None,
               "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
               "forced_bos_token_id": None, "forced_eos_token_id": None, "sequence_bias": None}
_PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json", "processor_config.json",
                    "preprocessor_config.json", "chat_template.json", "chat_template.jinja")


def _token_ids(value: int | list[int] | None, what: str) -> list[int]:
    """A generation-config token id (int or list) as a non-empty list."""
    ids = [value] if isinstance(value, int) else list(value or [])
    if not ids:
        raise ValueError(f"the model's generation config has no {what}")
    return ids


def check_greedy_config(generation_config) -> None:
    """Refuse generation configs whose decoding is not plain argmax (the graph would disagree)."""
    values = {name: getattr(generation_config, name, None) for name in _NON_GREEDY}
    changed = [name for name, value in values.items() if value not in (None, _NON_GREEDY[name], [])]
    if changed:
        raise ValueError(f"export supports plain greedy decoding only; the generation config sets {changed}")


class GreedyLlava(nn.Module):
    """Noisy frames + prompt ids -> greedily generated token ids, for a LlavaForConditionalGeneration."""

    def __init__(self, model: nn.Module, image_processor, max_new_tokens: int) -> None:
        super().__init__()
        config = model.config
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.image_token_id = config.image_token_id
        self.feature_layers = config.vision_feature_layer
        self.drop_cls = config.vision_feature_select_strategy == "default"
        generation = model.generation_config
        self.register_buffer("eos_ids", torch.tensor(_token_ids(generation.eos_token_id, "eos_token_id")))
        self.pad_id = _token_ids(generation.pad_token_id, "pad_token_id")[0]
        self.register_buffer("mean", torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected vision features (B, P, D), as LlavaModel.get_image_features, without its per-image split
        (which would bake the batch size into the trace)."""
        hidden = self.model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        layers = [self.feature_layers] if isinstance(self.feature_layers, int) else list(self.feature_layers)
        selected = [hidden[layer][:, 1:] if self.drop_cls else hidden[layer] for layer in layers]
        return self.model.model.multi_modal_projector(torch.cat(selected, dim=-1))

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Greedy decoding, unrolled for max_new_tokens steps."""
        embed = self.model.get_input_embeddings()
        features = self.image_features((pixel_values - self.mean) / self.std)
        embeds = embed(input_ids)
        image_slots = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(image_slots, features.to(embeds.dtype))
        finished = torch.zeros_like(input_ids[:, 0], dtype=torch.bool)
        tokens = []
        for _ in range(self.max_new_tokens):
            # An explicit all-ones mask keeps transformers' packed-sequence detection (torch.diff,
            # not exportable) out of the trace; there is no padding, so it changes nothing.
            mask = torch.ones_like(embeds[..., 0], dtype=torch.long)
            hidden = self.model.model.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
            token = self.model.lm_head(hidden.last_hidden_state[:, -1]).argmax(-1)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            finished = finished | (token.unsqueeze(-1) == self.eos_ids).any(-1)  # isin has no ONNX export
            tokens.append(token)
            embeds = torch.cat([embeds, embed(token).unsqueeze(1)], dim=1)
        return torch.stack(tokens, dim=1)


def copy_processor_files(model_dir: Path, out_dir: Path) -> list[str]:
    """Copy the tokenizer / processor files beside the graph; return their names."""
    copied = [name for name in _PROCESSOR_FILES if (model_dir / name).is_file()]
    for name in copied:
        shutil.copy2(model_dir / name, out_dir / name)
    return copied


def export_vla(model_dir: str | Path, out_path: str | Path, *, max_new_tokens: int = 8, opset: int = 17) -> Path:
    """Export the LLaVA-style model in `model_dir` to `out_path` (+ processor files beside it)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

    from rs_guard_ros.policies.transformers_policy import PromptCache, check_model_dir, model_input_size

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model_dir, out_path = check_model_dir(model_dir), Path(out_path)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32,
                                                        attn_implementation="eager").eval()
    if not isinstance(model, LlavaForConditionalGeneration):
        raise ValueError(f"{str(model_dir)!r} holds a {type(model).__name__}; this exporter handles LLaVA models")
    check_greedy_config(model.generation_config)
    wrapper = GreedyLlava(model, processor.image_processor, max_new_tokens).eval()
    height, width = model_input_size(processor.image_processor, model.config)
    # Batch 2 while tracing, so no size-1 dimension gets specialised away.
    input_ids = PromptCache(processor, (height, width), torch.device("cpu"))("example", 2)["input_ids"].contiguous()
    frames = torch.rand(2, 3, height, width)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, (frames, input_ids), str(out_path), dynamo=False,
                          input_names=["pixel_values", "input_ids"], output_names=["token_ids"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "input_ids": {0: "batch", 1: "prompt_len"},
                                        "token_ids": {0: "batch"}},
                          opset_version=opset)
    copy_processor_files(model_dir, out_path.parent)
    return out_path


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="LLaVA-style model directory (e.g. the demo VLA)")
    parser.add_argument("--out", required=True, help="output .onnx file; processor files are written beside it")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="greedy decoding steps unrolled in the graph")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    args = parser.parse_args(argv)
    try:
        path = export_vla(args.model, args.out, max_new_tokens=args.max_new_tokens, opset=args.opset)
    except ValueError as exc:
        print(f"export_onnx: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
