"""rs_guard_ros: a certified safety gate for robots driven by vision-language-action models.

`Guard` is imported lazily so that `rs_guard_ros.certify` stays usable without torch.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("rs_guard_ros")  # setup.py's version, as pip or colcon installed it
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
__all__ = ["Guard", "__version__"]


def __getattr__(name: str):
    if name == "Guard":
        from .guard import Guard

        return Guard
    raise AttributeError(f"module 'rs_guard_ros' has no attribute {name!r}")
