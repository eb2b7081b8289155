"""VLA backends (rs_guard_ros.policies): device choice, the transformers backend, the ONNX
backend and its exporter, Python plugins and the `load_policy` factory.

Models are built here, tiny and random, and loaded from disk like any user model; the
shipped demo VLA is used where it exists.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rs_guard_ros.policies import load_policy  # noqa: E402
from rs_guard_ros.policies.demo import DEMO_MODEL_DIR  # noqa: E402
from rs_guard_ros.policies.plugin import load_plugin  # noqa: E402
from rs_guard_ros.policies.transformers_policy import TransformersPolicy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "go", "left", "right", "stop", "forward",
         "where", "is", "the", "red", "object", "?"]
INSTRUCTION = "where is the red object ?"
SIZE = 64


# ------------------------------------------------------------------ tiny models on disk
def _tiny_processor():
    """LlavaProcessor: CLIP image processor at 64 px + a word-level fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    return transformers.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _tiny_llava() -> transformers.LlavaForConditionalGeneration:
    """A random LLaVA: CLIP vision tower 64 px / patch 8 + a one-layer Llama."""
    vision = transformers.CLIPVisionConfig(image_size=SIZE, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=1, num_attention_heads=2)
    text = transformers.LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                    pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=WORDS.index("<image>"),
                                      vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    return transformers.LlavaForConditionalGeneration(config).eval()


@pytest.fixture(scope="session")
def tiny_vla_dir(tmp_path_factory) -> Path:
    """A tiny random LLaVA + processor saved with save_pretrained, as a user's model directory."""
    path = tmp_path_factory.mktemp("tiny_vla")
    _tiny_llava().save_pretrained(path)
    _tiny_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_policy(tiny_vla_dir) -> TransformersPolicy:
    return TransformersPolicy(tiny_vla_dir, device="cpu")


def noisy_frames(n: int, seed: int, sigma: float = 0.25, distinct_images: bool = False) -> torch.Tensor:
    """n noisy copies of one random frame (or of n frames): [0, 1] + N(0, sigma^2), unclipped."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(n if distinct_images else 1, 3, SIZE, SIZE, generator=gen).expand(n, -1, -1, -1)
    return clean + sigma * torch.randn(n, 3, SIZE, SIZE, generator=gen)


def _copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ transformers backend
def test_transformers_policy_reports_model_geometry(tiny_policy) -> None:
    assert tiny_policy.input_size == (SIZE, SIZE)
    assert tiny_policy.output_kind == "text"
    assert tiny_policy.device == torch.device("cpu")
    assert tiny_policy.dtype == torch.float32
    assert tiny_policy.name.startswith("transformers:")


def test_batch_of_noisy_frames_gives_one_string_per_frame(tiny_policy) -> None:
    outputs = tiny_policy(noisy_frames(9, seed=1), INSTRUCTION)
    assert len(outputs) == 9
    assert all(isinstance(text, str) and text == text.strip() for text in outputs)
    assert any(outputs)  # a random model still generates words


def test_batched_greedy_outputs_equal_one_frame_at_a_time(tiny_policy) -> None:
    frames = noisy_frames(6, seed=2, distinct_images=True)
    batched = tiny_policy(frames, INSTRUCTION)
    single = [tiny_policy(frames[i : i + 1], INSTRUCTION)[0] for i in range(len(frames))]
    assert batched == single
    assert len(set(batched)) > 1  # the frames really drive the outputs


def test_generated_text_drops_prompt_and_special_tokens(tiny_policy) -> None:
    for text in tiny_policy(noisy_frames(16, seed=3), INSTRUCTION):
        assert "<image>" not in text and "</s>" not in text and "<pad>" not in text
        assert len(text.split()) <= 8  # max_new_tokens, prompt not echoed


class _CountingProcessor:
    """Wraps a processor and counts __call__ (everything else passes through)."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_prompt_is_tokenised_once_per_instruction(tiny_vla_dir) -> None:
    policy = TransformersPolicy(tiny_vla_dir, device="cpu")
    spy = _CountingProcessor(policy.processor)
    policy.prompts.processor = spy
    for seed in range(3):
        policy(noisy_frames(4, seed), INSTRUCTION)
    assert spy.calls == 1
    policy(noisy_frames(4, 0), "go left")
    policy(noisy_frames(8, 1), "go left")
    assert spy.calls == 2


def test_prompt_ids_match_the_processor_with_image_tokens_expanded(tiny_policy) -> None:
    from rs_guard_ros.policies.hf_inputs import build_prompt

    ids = tiny_policy.prompts(INSTRUCTION, 3)["input_ids"]
    expected = tiny_policy.processor(text=build_prompt(tiny_policy.processor, INSTRUCTION),
                                     images=[np.zeros((SIZE, SIZE, 3), np.uint8)], return_tensors="pt")["input_ids"]
    assert ids.shape == (3, expected.shape[1])
    assert torch.equal(ids, expected.expand(3, -1))
    assert int((ids[0] == WORDS.index("<image>")).sum()) == (SIZE // 8) ** 2


def test_model_sees_unquantised_unclipped_normalised_frames(tiny_vla_dir, monkeypatch) -> None:
    policy = TransformersPolicy(tiny_vla_dir, device="cpu")
    seen = {}
    generate = policy.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    monkeypatch.setattr(policy.model, "generate", spy)
    frames = noisy_frames(2, seed=4)
    frames[1] = frames[0] + 1e-3  # below one uint8 step (1/255), and partly outside [0, 1]
    policy(frames, INSTRUCTION)
    ip = policy.processor.image_processor
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    assert torch.allclose(seen["pixel_values"], (frames - mean) / std, atol=1e-6)
    difference = seen["pixel_values"][1] - seen["pixel_values"][0]
    assert torch.allclose(difference, 1e-3 / std[0].expand_as(difference), atol=1e-5)


@pytest.mark.parametrize(
    "remove, missing",
    [
        (["config.json"], "config.json"),
        (["model.safetensors"], "weights"),
        (["tokenizer.json", "tokenizer_config.json"], "tokenizer files"),
        (["processor_config.json"], "processor files"),
    ],
)
def test_incomplete_model_directory_error_names_path_and_missing_files(tiny_vla_dir, tmp_path, remove, missing) -> None:
    broken = _copy_dir(tiny_vla_dir, tmp_path / "broken_vla")
    for name in remove:
        (broken / name).unlink()
    with pytest.raises(ValueError) as err:
        TransformersPolicy(broken, device="cpu")
    assert str(broken) in str(err.value) and missing in str(err.value)


def test_missing_model_directory_error_names_path(tmp_path) -> None:
    with pytest.raises(ValueError, match="no_such_model"):
        TransformersPolicy(tmp_path / "no_such_model", device="cpu")


def test_processor_not_driven_by_mean_std_is_refused(tiny_vla_dir, tmp_path) -> None:
    odd = _copy_dir(tiny_vla_dir, tmp_path / "odd_pixels")
    config_path = odd / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"]["do_normalize"] = False  # processor output is x/255, not (x - mean)/std
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported pixel format"):
        TransformersPolicy(odd, device="cpu")


@pytest.mark.parametrize(
    "options, word",
    [({"mode": "classify"}, "mode"), ({"max_new_tokens": 0}, "max_new_tokens"),
     ({"dtype": "int8"}, "dtype"), ({"temperature": 0.0}, "temperature")],
)
def test_bad_transformers_options_raise_naming_them(tiny_vla_dir, options, word) -> None:
    with pytest.raises(ValueError, match=word):
        TransformersPolicy(tiny_vla_dir, device="cpu", **options)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, SIZE, SIZE), (3, SIZE, SIZE)])
def test_frames_of_wrong_shape_are_refused(tiny_policy, shape) -> None:
    with pytest.raises(ValueError, match="shape"):
        tiny_policy(torch.rand(*shape), INSTRUCTION)


def test_sampling_mode_still_returns_one_string_per_frame(tiny_vla_dir) -> None:
    policy = TransformersPolicy(tiny_vla_dir, device="cpu", do_sample=True, temperature=2.0, max_new_tokens=4)
    outputs = policy(noisy_frames(5, seed=5), INSTRUCTION)
    assert len(outputs) == 5 and all(len(text.split()) <= 4 for text in outputs)


def test_bfloat16_model_loads_and_gets_bfloat16_pixels(tiny_vla_dir) -> None:
    policy = TransformersPolicy(tiny_vla_dir, device="cpu", dtype="bf16")
    assert policy.model.dtype == torch.bfloat16
    assert policy.normalize(noisy_frames(2, seed=9)).dtype == torch.bfloat16
    assert len(policy(noisy_frames(3, seed=9), INSTRUCTION)) == 3


def test_action_mode_needs_a_model_with_predict_action(tiny_vla_dir) -> None:
    with pytest.raises(ValueError, match="predict_action"):
        TransformersPolicy(tiny_vla_dir, device="cpu", mode="action")


# ------------------------------------------------------------------ action mode
class TinyActionConfig(transformers.PretrainedConfig):
    model_type = "rsg_tiny_action_vla"

    def __init__(self, action_dim: int = 7, norm_stats: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.action_dim = action_dim
        self.norm_stats = norm_stats or {}


class TinyActionVLA(transformers.PreTrainedModel):
    """Stand-in for OpenVLA (whose weights cannot be downloaded here): a model exposing
    `predict_action(input_ids, unnorm_key, pixel_values=..., attention_mask=..., **kwargs)`
    that, like OpenVLA, handles one image per call and returns an (action_dim,) np.ndarray
    un-normalised with the statistics named by `unnorm_key`."""

    config_class = TinyActionConfig

    def __init__(self, config: TinyActionConfig) -> None:
        super().__init__(config)
        self.head = torch.nn.Linear(3 + 1, config.action_dim)
        self.post_init()

    def predict_action(self, input_ids=None, unnorm_key=None, *, pixel_values, attention_mask=None, **kwargs):
        if pixel_values.shape[0] != 1 or input_ids.shape[0] != 1:
            raise RuntimeError("like OpenVLA, predict_action takes one image")
        features = torch.cat([pixel_values.mean(dim=(2, 3)), input_ids.float().mean(dim=1, keepdim=True)], dim=1)
        action = torch.tanh(self.head(features))[0].cpu().numpy()
        stats = self.config.norm_stats.get(unnorm_key, {"scale": 1.0, "offset": 0.0})
        return action * stats["scale"] + stats["offset"]


@pytest.fixture(scope="session")
def action_vla_dir(tmp_path_factory) -> Path:
    transformers.AutoConfig.register(TinyActionConfig.model_type, TinyActionConfig, exist_ok=True)
    transformers.AutoModelForImageTextToText.register(TinyActionConfig, TinyActionVLA, exist_ok=True)
    path = tmp_path_factory.mktemp("action_vla")
    torch.manual_seed(1)
    config = TinyActionConfig(norm_stats={"bridge": {"scale": 2.0, "offset": 0.5}})
    TinyActionVLA(config).eval().save_pretrained(path)
    _tiny_processor().save_pretrained(path)
    return path


def test_action_mode_returns_one_action_vector_per_frame(action_vla_dir) -> None:
    policy = TransformersPolicy(action_vla_dir, device="cpu", mode="action", unnorm_key="bridge")
    assert policy.output_kind == "action" and policy.input_size == (SIZE, SIZE)
    frames = noisy_frames(5, seed=6)
    actions = policy(frames, INSTRUCTION)
    assert len(actions) == 5
    assert all(isinstance(a, np.ndarray) and a.shape == (7,) and a.dtype.kind == "f" for a in actions)
    # Each vector is the model's own predict_action on that frame, un-normalised with "bridge".
    ids = policy.prompts(INSTRUCTION, 1)
    with torch.inference_mode():
        direct = policy.model.predict_action(**ids, pixel_values=policy.normalize(frames[2:3]), unnorm_key="bridge")
    np.testing.assert_allclose(actions[2], direct, rtol=1e-6)
    plain = TransformersPolicy(action_vla_dir, device="cpu", mode="action")(frames, INSTRUCTION)
    np.testing.assert_allclose(actions[2], 2.0 * plain[2] + 0.5, rtol=1e-5)


# ------------------------------------------------------------------ ONNX backend and exporter
def _exporter():
    """scripts/export_onnx.py as a module."""
    spec = importlib.util.spec_from_file_location("export_onnx", REPO / "scripts" / "export_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _export(model_dir: Path, out: Path) -> Path:
    pytest.importorskip("onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about Python-side shape checks
        return _exporter().export_vla(model_dir, out)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_vla_dir, tmp_path_factory) -> Path:
    return _export(tiny_vla_dir, tmp_path_factory.mktemp("tiny_onnx") / "tiny_vla.onnx")


def _agreement(a: TransformersPolicy, b, instructions: list[str], n: int) -> float:
    """Fraction of noisy samples on which two policies give the same output."""
    same = total = 0
    for seed, instruction in enumerate(instructions):
        frames = noisy_frames(n, seed=100 + seed)
        same += sum(x == y for x, y in zip(a(frames, instruction), b(frames, instruction)))
        total += n
    return same / total


def test_exported_graph_follows_the_contract(tiny_onnx) -> None:
    from rs_guard_ros.policies.onnx_policy import OnnxPolicy

    policy = OnnxPolicy(tiny_onnx)
    assert policy.input_size == (SIZE, SIZE) and policy.output_kind == "text"
    assert (tiny_onnx.parent / "tokenizer.json").is_file() and (tiny_onnx.parent / "processor_config.json").is_file()
    for batch in (1, 7):  # dynamic batch size
        assert len(policy(noisy_frames(batch, seed=batch), INSTRUCTION)) == batch


def test_onnx_policy_agrees_with_transformers_policy(tiny_policy, tiny_onnx) -> None:
    onnx_policy = load_policy("onnx", str(tiny_onnx), device="cpu")
    # Two instructions: the graph takes prompts of any length.
    assert _agreement(tiny_policy, onnx_policy, [INSTRUCTION, "go left"], n=100) >= 0.99


def test_exporter_refuses_non_greedy_configs_and_non_llava_models(tiny_vla_dir, action_vla_dir, tmp_path) -> None:
    exporter = _exporter()
    config = transformers.GenerationConfig(repetition_penalty=1.3, eos_token_id=2, pad_token_id=0)
    with pytest.raises(ValueError, match="repetition_penalty"):
        exporter.check_greedy_config(config)
    exporter.check_greedy_config(transformers.GenerationConfig(eos_token_id=2, pad_token_id=0))
    with pytest.raises(ValueError, match="TinyActionVLA"):
        exporter.export_vla(action_vla_dir, tmp_path / "action.onnx")
    assert exporter.main(["--model", str(tmp_path / "absent"), "--out", str(tmp_path / "x.onnx")]) == 2


def _demo_scenes() -> list[tuple[torch.Tensor, str]]:
    """Clean (3, 64, 64) frames + instructions: the shipped examples when present, else random frames."""
    table = REPO / "examples" / "frames.csv"
    if not table.is_file():
        gen = torch.Generator().manual_seed(0)
        return [(torch.rand(3, SIZE, SIZE, generator=gen), "go to the red box") for _ in range(4)]
    cv2 = pytest.importorskip("cv2")
    scenes = []
    for row in table.read_text().splitlines()[1:]:
        name, instruction, _ = row.split(",")
        rgb = cv2.cvtColor(cv2.imread(str(table.parent / name)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        small = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        scenes.append((torch.from_numpy(small.transpose(2, 0, 1).copy()), instruction))
    return scenes


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(),
                    reason=f"the shipped demo VLA is not in {DEMO_MODEL_DIR} (scripts/train_demo_vla.py trains it)")
def test_onnx_export_of_the_demo_vla_agrees_with_transformers(tmp_path) -> None:
    demo = load_policy("demo", None, device="cpu")
    onnx_policy = load_policy("onnx", str(_export(DEMO_MODEL_DIR, tmp_path / "demo_vla.onnx")), device="cpu")
    gen = torch.Generator().manual_seed(1)
    same = total = 0
    for clean, instruction in _demo_scenes():
        frames = clean.expand(25, -1, -1, -1) + 0.25 * torch.randn(25, 3, SIZE, SIZE, generator=gen)
        same += sum(a == b for a, b in zip(demo(frames, instruction), onnx_policy(frames, instruction)))
        total += len(frames)
    assert same / total >= 0.99


def _logits_graph(path: Path, with_extra_input: bool = False) -> torch.nn.Module:
    """Export a small image classifier with the `logits` output (no prompt input)."""
    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, 4)

        def forward(self, pixel_values, *scale):
            logits = self.head(pixel_values.mean(dim=(2, 3)))
            return logits * scale[0] if scale else logits

    model = Classifier().eval()
    names = ["pixel_values"] + (["scale"] if with_extra_input else [])
    args = (torch.rand(2, 3, 8, 8),) + ((torch.rand(2, 1),) if with_extra_input else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes={name: {0: "batch"} for name in names + ["logits"]}, opset_version=17)
    return model


def test_onnx_logits_graph_returns_one_row_per_frame(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from rs_guard_ros.policies.onnx_policy import OnnxPolicy

    model = _logits_graph(tmp_path / "classifier.onnx")
    policy = OnnxPolicy(tmp_path / "classifier.onnx", providers="CPUExecutionProvider")
    frames = torch.rand(5, 3, 8, 8) * 1.5 - 0.25
    rows = policy(frames, "any instruction")
    assert policy.output_kind == "logits" and policy.processor is None
    assert len(rows) == 5 and all(row.shape == (4,) for row in rows)
    with torch.no_grad():
        np.testing.assert_allclose(np.stack(rows), model(frames).numpy(), rtol=1e-5, atol=1e-6)


def test_onnx_graph_breaking_the_contract_is_refused(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from rs_guard_ros.policies.onnx_policy import OnnxPolicy

    _logits_graph(tmp_path / "odd.onnx", with_extra_input=True)
    with pytest.raises(ValueError, match="odd.onnx"):
        OnnxPolicy(tmp_path / "odd.onnx")
    with pytest.raises(ValueError, match="missing.onnx"):
        OnnxPolicy(tmp_path / "missing.onnx")


def test_provider_selection_orders_gpu_first_and_rejects_unknown_names() -> None:
    from rs_guard_ros.policies.onnx_policy import select_providers

    available = ["CPUExecutionProvider", "AzureExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert select_providers("auto", available) == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                   "CPUExecutionProvider"]
    assert select_providers("CUDAExecutionProvider,CPUExecutionProvider", available)[0] == "CUDAExecutionProvider"
    with pytest.raises(ValueError, match="ROCMExecutionProvider"):
        select_providers(["ROCMExecutionProvider"], available)


def test_onnx_cuda_io_binding_matches_host_path(tiny_onnx) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
        pytest.skip("needs onnxruntime's CUDAExecutionProvider and a CUDA device")
    from rs_guard_ros.policies.onnx_policy import OnnxPolicy

    gpu = OnnxPolicy(tiny_onnx, providers="CUDAExecutionProvider,CPUExecutionProvider", device="cuda")
    cpu = OnnxPolicy(tiny_onnx, providers="CPUExecutionProvider", device="cpu")
    assert gpu._use_binding
    frames = noisy_frames(32, seed=7)
    agree = np.mean([a == b for a, b in zip(gpu(frames.cuda(), INSTRUCTION), cpu(frames, INSTRUCTION))])
    assert agree >= 0.95


# ------------------------------------------------------------------ plugins and the factory
PLUGIN_SOURCE = textwrap.dedent(
    """
    import torch

    class EchoPolicy:
        name = "echo"
        output_kind = "text"

        def __init__(self, device="cpu", size=8):
            self.device = torch.device(device)
            self.input_size = (size, size)

        def __call__(self, frames, instruction):
            return [instruction] * frames.shape[0]

    def make(device="cpu", size=8):
        return EchoPolicy(device, size)

    def make_not_a_policy(**kwargs):
        return "not a policy"

    class NoKind:
        name, input_size, device = "x", (8, 8), torch.device("cpu")

        def __call__(self, frames, instruction):
            return []

    def make_without_kind(**kwargs):
        return NoKind()

    not_callable = 3
    """
)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch) -> str:
    name = f"rsg_test_plugin_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_valid_plugin_spec_loads_with_options(plugin_module) -> None:
    policy = load_policy("plugin", f"{plugin_module}:make", device="cpu", size=16)
    assert policy.input_size == (16, 16) and policy.device == torch.device("cpu")
    assert policy(torch.zeros(3, 3, 16, 16), "stop") == ["stop"] * 3


@pytest.mark.parametrize("attr", ["no_such_factory", "make_not_a_policy", "make_without_kind", "not_callable"])
def test_bad_plugin_targets_raise_naming_the_spec(plugin_module, attr) -> None:
    spec = f"{plugin_module}:{attr}"
    with pytest.raises(ValueError) as err:
        load_plugin(spec)
    assert repr(spec) in str(err.value)


def test_plugin_in_a_missing_module_raises_naming_the_spec() -> None:
    with pytest.raises(ValueError, match="rsg_no_such_module_xyz"):
        load_plugin("rsg_no_such_module_xyz:make")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20).filter(lambda s: s.count(":") != 1 or s.startswith(":") or s.endswith(":")))
def test_malformed_plugin_specs_raise_naming_them(spec: str) -> None:
    with pytest.raises(ValueError) as err:
        load_plugin(spec)
    assert repr(spec) in str(err.value)


def test_load_policy_rejects_unknown_backends_and_missing_paths() -> None:
    with pytest.raises(ValueError, match="'tensorrt'"):
        load_policy("tensorrt", "model.engine")
    with pytest.raises(ValueError, match="'transformers'"):
        load_policy("transformers", None)
    with pytest.raises(ValueError, match="demo"):
        load_policy("demo", "some/dir")


def test_load_policy_builds_a_transformers_policy(tiny_vla_dir) -> None:
    policy = load_policy("transformers", str(tiny_vla_dir), device="cpu", max_new_tokens=3)
    assert isinstance(policy, TransformersPolicy)
    assert all(len(text.split()) <= 3 for text in policy(noisy_frames(4, seed=8), INSTRUCTION))


# ------------------------------------------------------------------ real-VLA loading: model.path, remote code, checks
def test_a_hub_id_model_path_answers_in_one_line_with_the_exact_download_command(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # "openvla/openvla-7b" is not a directory here
    with pytest.raises(ValueError) as err:
        load_policy("transformers", "openvla/openvla-7b", device="cpu")
    assert str(err.value) == (
        "model.path 'openvla/openvla-7b' looks like a Hugging Face hub id, but nothing is downloaded at run time: "
        "run `hf download openvla/openvla-7b --local-dir /opt/models/openvla-7b` on a machine with "
        "network and set model.path: /opt/models/openvla-7b")


def test_the_download_command_we_print_is_one_the_installed_huggingface_hub_ships() -> None:
    """Issue 15: huggingface_hub dropped `huggingface-cli`; the command in every missing-model
    message must run as printed (here: its program is one of the package's console scripts,
    and that program's own parser accepts the arguments, checked with --help)."""
    import importlib.metadata
    import subprocess
    import sys

    from rs_guard_ros.policies.model_path import download_command

    words = download_command("openvla/openvla-7b", "/opt/models/openvla-7b").split()
    scripts = {e.name for e in importlib.metadata.distribution("huggingface_hub").entry_points
               if e.group == "console_scripts"}
    assert words[0] in scripts, f"{words[0]} is not a console script of huggingface_hub {sorted(scripts)}"
    program = Path(sys.executable).parent / words[0]
    usage = subprocess.run([str(program), *words[1:2], "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--local-dir" in usage.stdout


def test_a_missing_model_directory_is_told_apart_from_a_hub_id(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "models" / "openvla-7b"
    with pytest.raises(ValueError) as err:
        TransformersPolicy(missing, device="cpu")
    text = str(err.value)
    assert "\n" not in text and "hub id" not in text
    assert f"model.path '{missing}' does not exist on this machine" in text
    assert f"--local-dir {missing}" in text
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a model directory"):
        TransformersPolicy(tmp_path / "weights.bin", device="cpu")
    # An existing relative directory shaped like "org/name" is a local model, not a hub id.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    with pytest.raises(ValueError, match="incomplete"):
        TransformersPolicy("org/name", device="cpu")


def test_unnorm_key_must_name_one_of_the_models_datasets_at_load_time(action_vla_dir) -> None:
    with pytest.raises(ValueError, match=r"model\.unnorm_key 'nope'.*\['bridge'\]"):
        TransformersPolicy(action_vla_dir, device="cpu", mode="action", unnorm_key="nope")
    assert TransformersPolicy(action_vla_dir, device="cpu", mode="action").unnorm_key is None  # its only dataset


def test_a_prompt_template_the_processor_cannot_encode_fails_at_load_time(tiny_vla_dir) -> None:
    with pytest.raises(ValueError, match=r"model\.prompt_template.*'where is go forward'.*<image>"):
        TransformersPolicy(tiny_vla_dir, device="cpu", prompt_template="where is {instruction}")  # no <image>
    policy = TransformersPolicy(tiny_vla_dir, device="cpu", prompt_template="<image> {instruction} ?")
    assert policy.prompts.prompt("go left") == "<image> go left ?"


@pytest.fixture(scope="session")
def openvla_standin_dir(tmp_path_factory) -> Path:
    from ros_peers.openvla_standin import build

    return build(tmp_path_factory.mktemp("openvla_standin"))


OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


def test_an_openvla_style_directory_loads_its_own_code_through_auto_map(openvla_standin_dir) -> None:
    policy = TransformersPolicy(openvla_standin_dir, device="cpu", mode="action", trust_remote_code=True,
                                unnorm_key="standin_nav", prompt_template=OPENVLA_PROMPT)
    assert type(policy.model).__name__ == "StandInOpenVLA"  # named only under AutoModelForVision2Seq
    assert policy.input_size == (32, 32) and policy.normalize(torch.rand(2, 3, 32, 32)).shape == (2, 6, 32, 32)
    green = torch.zeros(1, 3, 32, 32)
    green[:, 1] = 1.0
    np.testing.assert_allclose(policy(green, "go to the red box")[0][[0, 5]], [0.02, 0.0], atol=1e-3)


def test_an_untrusted_directory_with_its_own_code_says_which_parameter_to_set(openvla_standin_dir) -> None:
    with pytest.raises(ValueError) as err:
        TransformersPolicy(openvla_standin_dir, device="cpu", mode="action")
    assert "set model.trust_remote_code: true" in str(err.value) and "\n" not in str(err.value)


def test_an_image_blind_action_model_is_refused_at_load_time(openvla_standin_dir, tmp_path) -> None:
    from safetensors.torch import save_file

    blind = _copy_dir(openvla_standin_dir, tmp_path / "blind")
    save_file({"gain": torch.zeros(2)}, str(blind / "model.safetensors"))  # the rule no longer reads the image
    with pytest.raises(ValueError, match="same action .* ignores the image"):
        TransformersPolicy(blind, device="cpu", mode="action", trust_remote_code=True, unnorm_key="standin_nav",
                           prompt_template=OPENVLA_PROMPT)


# ------------------------------------------------------------------ dynamic-resolution processors (SmolVLM/Idefics3)
@pytest.fixture(scope="session")
def smolvlm_standin_dir(tmp_path_factory) -> Path:
    from ros_peers.idefics3_standin import build

    return build(tmp_path_factory.mktemp("smolvlm_standin"))


def test_a_processor_that_tiles_images_is_refused_naming_model_image_size(smolvlm_standin_dir) -> None:
    with pytest.raises(ValueError) as err:
        TransformersPolicy(smolvlm_standin_dir, device="cpu")
    assert str(err.value).startswith("model.image_size: image processor Idefics3ImageProcessorPil picks its "
                                     "resolution per image (do_image_splitting)")
    assert "set model.image_size (e.g. 64" in str(err.value)
    with pytest.raises(ValueError, match=r"model\.image_size 512: the vision encoder takes 64 x 64"):
        TransformersPolicy(smolvlm_standin_dir, device="cpu", image_size=512)


def test_a_fixed_image_size_reproduces_the_processor_with_its_image_axis(smolvlm_standin_dir) -> None:
    policy = TransformersPolicy(smolvlm_standin_dir, device="cpu", image_size=64, max_new_tokens=3)
    ip = policy.processor.image_processor
    assert policy.input_size == (64, 64) and not ip.do_image_splitting
    frames = noisy_frames(3, seed=11)
    pixels = policy.normalize(frames)
    assert pixels.shape == (3, 1, 3, 64, 64)  # one image per prompt, as Idefics3 lays it out
    assert torch.allclose(pixels[:, 0], (frames - 0.5) / 0.5, atol=1e-6)
    outputs = policy(frames, "go to the red box")
    assert len(outputs) == 3 and all(isinstance(text, str) for text in outputs)
    assert policy(frames[:1], "go to the red box")[0] == outputs[0]


def test_several_cameras_go_into_one_prompt_as_the_processor_lays_out_a_list_of_images(smolvlm_standin_dir) -> None:
    """views=2 on the Idefics3 stand-in: the prompt holds one image block per camera, and the
    gate's text ids, pixel values (camera order on the image axis) and generated text are those
    of the processor called with the list of the two images."""
    from PIL import Image

    policy = TransformersPolicy(smolvlm_standin_dir, device="cpu", image_size=64, max_new_tokens=3, views=2)
    colours = ((51, 102, 153), (204, 0, 102))  # k/255: exact in uint8, so the processor sees the same images
    front, rear = (torch.tensor(c, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 64, 64) / 255 for c in colours)
    prompt = policy.prompts.prompt("go to the red box")
    assert prompt.count("<image>") == 2
    expected = policy.processor(text=prompt, images=[[Image.new("RGB", (64, 64), c) for c in colours]],
                                return_tensors="pt")
    assert torch.equal(policy.prompts("go to the red box", 1)["input_ids"], expected["input_ids"])
    pixels = policy.pixel_values((front, rear))
    assert pixels.shape == expected["pixel_values"].shape == (1, 2, 3, 64, 64)
    assert torch.allclose(pixels, expected["pixel_values"], atol=1e-6)
    generated = policy.model.generate(**expected, **policy.generate_kwargs)
    reference = policy.processor.tokenizer.batch_decode(generated[:, expected["input_ids"].shape[1]:],
                                                        skip_special_tokens=True)
    assert policy((front, rear), "go to the red box") == [reference[0].strip()]
