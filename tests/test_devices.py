"""rs_guard_ros.devices: configuration device names -> torch.device, failing closed."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rs_guard_ros.devices import resolve_device


def test_resolve_device_auto_picks_cuda_only_when_available() -> None:
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_resolve_device_without_cuda_rejects_cuda(spec: str) -> None:
    with pytest.raises(ValueError, match=repr(spec)):
        resolve_device(spec)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_resolve_device_rejects_every_other_spec_naming_it(spec: str) -> None:
    if spec in ("auto", "cpu") or (spec.startswith("cuda") and torch.cuda.is_available()):
        return
    with pytest.raises(ValueError) as err:
        resolve_device(spec)
    assert repr(spec) in str(err.value)
