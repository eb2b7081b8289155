"""rs_guard_ros: a certified safety gate for robots driven by vision-language-action models.

`Guard` is imported lazily so that `rs_guard_ros.certify` stays usable without torch.
"""
__version__ = "0.1.0"
__all__ = ["Guard", "__version__"]


def __getattr__(name: str):
    if name == "Guard":
        from .guard import Guard

        return Guard
    raise AttributeError(f"module 'rs_guard_ros' has no attribute {name!r}")
