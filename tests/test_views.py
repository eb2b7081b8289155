"""views.py and the Guard on several cameras: the views are one noisy input, each view reaches
the policy in its own shape, and the radius is reported jointly and per camera."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rs_guard_ros.config import ConfigError, from_flat
from rs_guard_ros.guard import Guard
from rs_guard_ros.oracles import make_oracle
from rs_guard_ros.views import ViewLayout, camera_radii

TWO = {"cameras.names": ["front", "rear"], "smoothing.mode": "fixed", "smoothing.n0": 16, "smoothing.n_max": 300,
       "smoothing.batch_size": 100, "smoothing.seed": 7}
SIZES = ((32, 48), (16, 16))


class FrontOrRearPolicy:
    """STAND-IN, not a model: two views (front 32x48, rear 16x16). Says "turn left" when the
    front view is brighter than the rear one, else "turn right"; keeps what it saw."""

    name, input_size, input_sizes, views = "front-or-rear", SIZES[0], SIZES, 2
    device, output_kind = torch.device("cpu"), "text"

    def __init__(self):
        self.seen, self.states = [], []

    def __call__(self, frames, instruction, state=None):
        front, rear = frames
        self.seen.append((front.clone(), rear.clone()))
        self.states.append(state)
        left = front.mean(dim=(1, 2, 3)) > rear.mean(dim=(1, 2, 3))
        return ["turn left" if v else "turn right" for v in left.tolist()]


def two_camera_guard(**flat) -> Guard:
    cfg = from_flat({**TWO, **flat})
    return Guard(FrontOrRearPolicy(), make_oracle("grammar", cfg.commands.table), cfg)


def frames(front_level: int = 200, rear_level: int = 40) -> dict:
    return {"front": np.full((96, 128, 3), front_level, np.uint8), "rear": np.full((64, 64, 3), rear_level, np.uint8)}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=4), st.integers(1, 5))
def test_views_pack_into_one_vector_and_unpack_into_their_shapes_without_a_copy(sizes, batch):
    layout = ViewLayout([f"cam{i}" for i in range(len(sizes))], sizes)
    views = [torch.randn(3, h, w) for h, w in sizes]
    x = layout.pack(views)
    assert x.numel() == layout.numel == sum(v.numel() for v in views)
    noisy = x.reshape(1, *x.shape).repeat(batch, *[1] * x.ndim)
    out = layout.unpack(noisy)
    out = (out,) if isinstance(out, torch.Tensor) else out
    for view, part in zip(views, out):
        assert part.shape == (batch, *view.shape) and torch.equal(part[0], view)
        assert part.untyped_storage().data_ptr() == noisy.untyped_storage().data_ptr()  # a view, not a copy


def test_issue17_noise_goes_on_every_view_and_each_reaches_the_policy_in_its_own_shape():
    guard = two_camera_guard()
    d = guard.decide(frames(), "go to the red box")
    assert d.certified and d.command == "left"
    fronts = torch.cat([f for f, _ in guard.policy.seen])
    rears = torch.cat([r for _, r in guard.policy.seen])
    assert fronts.shape[1:] == (3, 32, 48) and rears.shape[1:] == (3, 16, 16)
    # the noise is N(0, sigma^2) on both views, independently
    assert float((fronts - 200 / 255).std()) == pytest.approx(0.25, rel=0.02)
    assert float((rears - 40 / 255).std()) == pytest.approx(0.25, rel=0.05)
    assert abs(float(torch.corrcoef(torch.stack([fronts[:, 0, 0, 0], rears[:, 0, 0, 0]]))[0, 1])) < 0.15


def test_issue17_the_joint_radius_is_reported_per_camera_against_the_probed_operator_norms():
    """R covers sum ||delta_i||^2 < R^2 at the model input; in camera i's own pixels (it alone
    perturbed) that is R / ||A_i||, and for all cameras at once R / max ||A_i||. The norms are
    checked against the explicitly probed preprocessing matrices of both views."""
    guard = two_camera_guard()
    d = guard.decide(frames(), "go to the red box")
    norms = {}
    for name, in_size in (("front", (96, 128)), ("rear", (64, 64))):
        rows, cols = guard.preprocessors[name].axis_matrices(in_size)
        norms[name] = float(np.linalg.norm(np.kron(rows, cols), 2))
    assert d.radius_cameras == pytest.approx({name: d.radius / n for name, n in norms.items()}, rel=1e-6)
    assert d.radius_camera == pytest.approx(d.radius / max(norms.values()), rel=1e-6)
    assert camera_radii(d.radius, norms)["joint"] == pytest.approx(d.radius_camera, rel=1e-6)


@pytest.mark.parametrize("given,why", [
    ({"front": np.zeros((96, 128, 3), np.uint8)}, "frames for cameras ['front'], expected ['front', 'rear']"),
    (np.zeros((96, 128, 3), np.uint8), "2 cameras ['front', 'rear'] need one frame each"),
    ({"front": np.zeros((96, 128, 3), np.uint8), "rear": np.zeros((8, 8, 3), np.uint8)},
     "camera 'rear': frame 8x8 is smaller than the model input 16x16"),
])
def test_issue17_a_missing_or_unusable_view_is_an_input_error_naming_the_camera(given, why):
    d = two_camera_guard().decide(given, "go")
    assert not d.certified and d.command == "stop" and d.reason.startswith("input:") and why in d.reason


def test_issue17_a_camera_count_the_model_does_not_take_is_refused_at_start_up():
    cfg = from_flat({**TWO, "cameras.names": ["front", "rear", "wrist"]})
    with pytest.raises(ConfigError, match=r"'cameras\.names': the model takes 2 image\(s\) but cameras\.names lists 3"):
        Guard(FrontOrRearPolicy(), make_oracle("grammar", cfg.commands.table), cfg)


def test_issue17_the_joint_state_reaches_the_policy_and_a_decision_without_it_abstains():
    guard = two_camera_guard(**{"state.topic": "joint_states", "state.joint_names": ["wheel_left", "wheel_right"]})
    assert guard.decide(frames(), "go").reason == "input: no joint state (state.topic is set)"
    d = guard.decide(frames(), "go", state=[0.5, -0.25])
    assert d.certified and all(torch.equal(s, torch.tensor([0.5, -0.25])) for s in guard.policy.states[-3:])
    bad = guard.decide(frames(), "go", state=[0.5, float("nan")])
    assert not bad.certified and "joint state must be 2 finite numbers" in bad.reason


# -- the backends: one input per camera, and the state ------------------------------------------

def _two_view_graph(path, with_state: bool):
    """A small real ONNX graph: logits from the mean colour of a front (8x8) and a wrist (4x6)
    view, plus the state's first value when the graph takes one."""
    import warnings

    class TwoViews(torch.nn.Module):
        def forward(self, front, wrist, *state):
            logits = torch.cat([front.mean(dim=(2, 3)), wrist.mean(dim=(2, 3))], dim=1)
            return logits + state[0][:, :1] if state else logits

    names = ["front", "wrist"] + (["state"] if with_state else [])
    args = (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 4, 6)) + ((torch.rand(2, 2),) if with_state else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoViews().eval(), args, str(path), dynamo=False, input_names=names,
                          output_names=["logits"], dynamic_axes={n: {0: "batch"} for n in names + ["logits"]},
                          opset_version=17)
    return path


def test_issue17_an_onnx_graph_takes_one_named_input_per_camera_and_the_state(tmp_path):
    pytest.importorskip("onnxruntime")
    from rs_guard_ros.policies.onnx_policy import OnnxPolicy

    graph = _two_view_graph(tmp_path / "two.onnx", with_state=True)
    policy = OnnxPolicy(graph, providers="CPUExecutionProvider", input_names=("front", "wrist"), reads_state=True)
    assert policy.views == 2 and policy.input_sizes == ((8, 8), (4, 6))
    front, wrist = torch.full((3, 3, 8, 8), 0.2), torch.full((3, 3, 4, 6), 0.7)
    rows = policy((front, wrist), "go", state=torch.tensor([10.0, 0.0]))
    np.testing.assert_allclose(np.stack(rows), [[10.2, 10.2, 10.2, 10.7, 10.7, 10.7]] * 3, rtol=1e-5)
    with pytest.raises(ValueError, match=r"must take \['front', 'wrist', 'state'\]"):
        OnnxPolicy(_two_view_graph(tmp_path / "nostate.onnx", False), input_names=("front", "wrist"),
                   reads_state=True)
    with pytest.raises(ValueError, match=r"must take \['front', 'rear'\]"):
        OnnxPolicy(graph, input_names=("front", "rear"))


def test_issue17_a_plugin_factory_learns_the_cameras_and_its_policy_gets_every_view(tmp_path, monkeypatch):
    """The plugin API: the factory receives {camera: model key} when there are several cameras,
    and the policy is called with one view per camera and the joint state."""
    (tmp_path / "two_view_plugin.py").write_text(
        "import torch\n"
        "class P:\n"
        "    name, output_kind, device = 'two-view-plugin', 'text', torch.device('cpu')\n"
        "    def __init__(self, cameras):\n"
        "        self.cameras = cameras\n"
        "        self.input_sizes = ((32, 48), (16, 16))\n"
        "        self.input_size, self.views, self.calls = self.input_sizes[0], 2, []\n"
        "    def __call__(self, frames, instruction, state=None):\n"
        "        self.calls.append((tuple(f.shape[1:] for f in frames), None if state is None else state.tolist()))\n"
        "        return ['turn left'] * len(frames[0])\n"
        "def make(cameras, **options):\n"
        "    return P(cameras)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = from_flat({**TWO, "model.backend": "plugin", "model.path": "two_view_plugin:make",
                     "cameras.rear.model_key": "observation.images.rear", "state.topic": "joint_states",
                     "state.joint_names": ["lift"]})
    guard = Guard.from_config(cfg)
    assert guard.policy.cameras == {"front": "front", "rear": "observation.images.rear"}
    d = guard.decide(frames(), "go", state=[0.3])
    assert d.certified and d.command == "left"
    assert guard.policy.calls[0] == (((3, 32, 48), (3, 16, 16)), pytest.approx([0.3]))
