"""onnxruntime backend: an exported policy graph behind the `Policy` protocol.

Graph contract (what `scripts/export_onnx.py` writes, and what a hand-made graph must follow):

Inputs
  ``pixel_values``  float32 (B, 3, H, W), static H and W: the raw noisy frames, [0, 1] RGB
                    plus Gaussian noise, *not* clipped. Any normalisation is inside the graph.
                    With several cameras: one such input per camera instead, named by its
                    cameras.<name>.model_key (else the camera's name), each with its own H, W.
  ``state``         float32 (B, S), when the gate reads a joint state (state.topic): the same
                    state vector in every row. A graph takes it exactly when state.topic is set.
  ``input_ids``     int64 (B, T), optional: the prompt (chat template or
                    ``"<image>\\n{instruction}\\n"``, see hf_inputs.build_prompt) tokenised by the
                    processor stored beside the graph, image placeholder tokens expanded as the
                    processor does. Every row is the same prompt; no attention mask (no padding).

Output (exactly one of)
  ``token_ids``  int64 (B, T_out): generated tokens; once a row has produced EOS the rest of
                 it is the pad token (as Hugging Face generate() does). Decoded with the
                 tokenizer beside the graph, special tokens skipped -> ``output_kind = "text"``.
  ``logits``     float (B, K): class scores -> one np.ndarray per frame, ``"logits"``.
  ``action``     float (B, D): continuous actions -> one np.ndarray per frame, ``"action"``.

Beside the graph (same directory): the processor / tokenizer files (tokenizer.json,
tokenizer_config.json, processor_config.json, ...) whenever the graph has ``input_ids`` or
outputs ``token_ids``.

Execution providers: "auto" takes TensorRT, CUDA, CPU in that order among those this
onnxruntime build offers. With a CUDA provider and a CUDA device, frames are bound in place
(I/O binding on the torch tensor's memory, outputs kept on the device until read), so noisy
batches never leave the GPU on the way in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..devices import resolve_device
from .transformers_policy import PromptCache, check_frames, load_processor

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = PROVIDER_ORDER[:2]
OUTPUT_KINDS = {"token_ids": "text", "logits": "logits", "action": "action"}
PIXELS, STATE = "pixel_values", "state"  # the one-camera image input; the joint state input
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def select_providers(spec: str | Sequence[str], available: Sequence[str]) -> list[str]:
    """Execution providers to use: "auto" (TensorRT > CUDA > CPU), or names (list or comma-separated)."""
    if spec == "auto":
        return [name for name in PROVIDER_ORDER if name in available]
    names = [name.strip() for name in spec.split(",")] if isinstance(spec, str) else list(spec)
    unknown = [name for name in names if name not in available]
    if not names or unknown:
        raise ValueError(f"providers {spec!r}: {unknown or 'none given'} not available "
                         f"(this onnxruntime offers {list(available)})")
    return names


def _graph_path(path: str | Path) -> Path:
    """The .onnx file: `path` itself, or model.onnx inside a directory; errors name the path."""
    graph = Path(path)
    if graph.is_dir():
        graph = graph / "model.onnx"
    if not graph.is_file():
        raise ValueError(f"ONNX policy graph {str(graph)!r} does not exist")
    return graph


def _default_device(providers: list[str]) -> str:
    """The device "auto" means here: CUDA only when the first provider runs on the GPU too."""
    return "auto" if providers[0] in GPU_PROVIDERS else "cpu"


def graph_inputs(session: Any, graph: Path, image_names: Sequence[str] = (PIXELS,),
                 reads_state: bool = False) -> tuple[set[str], tuple[tuple[int, int], ...]]:
    """Validate the graph's inputs against the contract (one image input per camera, input_ids
    optional, `state` exactly when the gate reads one); their names and each image's static (H, W)."""
    inputs = {node.name: node for node in session.get_inputs()}
    wanted = [*image_names, *([STATE] if reads_state else [])]
    if any(name not in inputs for name in wanted) or set(inputs) - {*wanted, "input_ids"}:
        raise ValueError(f"ONNX policy graph {str(graph)!r} must take {wanted} (and optionally 'input_ids'); it "
                         f"takes {sorted(inputs)}")
    sizes = []
    for name in image_names:
        shape = inputs[name].shape
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(v, int) for v in shape[2:]):
            raise ValueError(f"ONNX policy graph {str(graph)!r}: {name} must be (B, 3, H, W) with static H and W, "
                             f"got {shape}")
        sizes.append((int(shape[2]), int(shape[3])))
    return set(inputs), tuple(sizes)


def graph_output(session: Any, graph: Path) -> str:
    """The graph's one contract output (token_ids, logits or action)."""
    names = [node.name for node in session.get_outputs()]
    matching = [name for name in names if name in OUTPUT_KINDS]
    if len(matching) != 1:
        raise ValueError(f"ONNX policy graph {str(graph)!r} must have exactly one output among "
                         f"{sorted(OUTPUT_KINDS)}; it has {names}")
    return matching[0]


class OnnxPolicy:
    """An exported policy graph run by onnxruntime (contract in the module docstring)."""

    def __init__(self, path: str | Path, *, providers: str | Sequence[str] = "auto", device: str = "auto",
                 input_names: Sequence[str] = (PIXELS,), reads_state: bool = False) -> None:
        """`input_names`: the graph's image inputs, one per camera in camera order;
        `reads_state`: the graph takes the joint state as `state`."""
        import onnxruntime as ort

        graph = _graph_path(path)
        self.providers = select_providers(providers, ort.get_available_providers())
        self.device = resolve_device(_default_device(self.providers) if device == "auto" else device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(graph), options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 -- re-raised with the path
            raise ValueError(f"cannot load ONNX policy graph {str(graph)!r}: {exc}") from exc
        self.name = f"onnx:{graph.stem}"
        self.image_names = tuple(input_names)
        input_names, self.input_sizes = graph_inputs(self.session, graph, self.image_names, reads_state)
        self.input_size, self.views = self.input_sizes[0], len(self.input_sizes)
        self.output_name = graph_output(self.session, graph)
        self.output_kind = OUTPUT_KINDS[self.output_name]
        self._use_binding = self.device.type == "cuda" and self.session.get_providers()[0] in GPU_PROVIDERS
        needs_text = "input_ids" in input_names or self.output_name == "token_ids"
        self.processor = self._load_processor(graph.parent) if needs_text else None
        # Prompt ids live where the graph reads them: on the GPU when inputs are bound there.
        prompt_device = self.device if self._use_binding else torch.device("cpu")
        has_prompt = "input_ids" in input_names
        self.prompts = PromptCache(self.processor, self.input_size, prompt_device) if has_prompt else None

    @staticmethod
    def _load_processor(folder: Path) -> Any:
        """The processor stored beside the graph (prompt building and decoding)."""
        if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            raise ValueError(f"ONNX policy graph in {str(folder)!r} uses text but no tokenizer files "
                             f"({', '.join(_TOKENIZER_FILES)}) are beside it")
        return load_processor(folder, trust_remote_code=False)

    def __call__(self, frames: torch.Tensor | Sequence[torch.Tensor], instruction: str,
                 state: torch.Tensor | None = None) -> Sequence[Any]:
        """One output per sample (decoded text, logits row or action row). `frames`: (B, 3, H, W),
        or one such tensor per camera; `state`: the joint state, for a graph that takes it."""
        views = (frames,) if isinstance(frames, torch.Tensor) else tuple(frames)
        if len(views) != self.views:
            raise ValueError(f"expected {self.views} camera view(s), got {len(views)}")
        feeds = {name: check_frames(view, size, self.device).float().contiguous()
                 for name, view, size in zip(self.image_names, views, self.input_sizes)}
        rows = views[0].shape[0]
        if state is not None:
            feeds[STATE] = state.to(self.device, torch.float32).reshape(1, -1).expand(rows, -1).contiguous()
        if self.prompts is not None:
            feeds["input_ids"] = self.prompts(instruction, rows)["input_ids"].contiguous()
        output = self._run_bound(feeds) if self._use_binding else self._run_host(feeds)
        if self.output_kind == "text":
            texts = self.processor.tokenizer.batch_decode(output, skip_special_tokens=True)
            return [text.strip() for text in texts]
        return list(output.astype(np.float64, copy=False))

    def _run_host(self, feeds: dict[str, torch.Tensor]) -> np.ndarray:
        """CPU path: torch tensors as numpy views, one session.run."""
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in feeds.items()}
        return self.session.run([self.output_name], arrays)[0]

    def _run_bound(self, feeds: dict[str, torch.Tensor]) -> np.ndarray:
        """CUDA path: bind the torch tensors' device memory as inputs, the output on the device."""
        binding = self.session.io_binding()
        device_id = self.device.index or 0
        for name, tensor in feeds.items():
            element_type = np.float32 if tensor.dtype == torch.float32 else np.int64
            binding.bind_input(name, device_type="cuda", device_id=device_id, element_type=element_type,
                               shape=tuple(tensor.shape), buffer_ptr=tensor.data_ptr())
        binding.bind_output(self.output_name, device_type="cuda", device_id=device_id)
        torch.cuda.current_stream(self.device).synchronize()  # inputs written before ORT reads them
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
