"""FAKE launch APIs for structural tests: `launch`, `launch_ros` and `ament_index_python`
cannot be installed here, so launch files are imported against stand-ins that record how
each action was built, and their OpaqueFunction is run with given argument values."""
import importlib.util
import sys
import types
from pathlib import Path


class Recorded:
    """Stands in for a launch action/description: remembers how it was built."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def launch_loader(monkeypatch, shares: dict[str, str]):
    """Import launch files against recording stand-ins (launch/launch_ros have no wheels);
    `shares` maps package names to their share directories."""
    fakes = {
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module("ament_index_python.packages",
                                               get_package_share_directory=shares.__getitem__),
        "launch": _module("launch", LaunchDescription=Recorded),
        "launch.actions": _module("launch.actions", DeclareLaunchArgument=type("Declare", (Recorded,), {}),
                                  IncludeLaunchDescription=type("Include", (Recorded,), {}),
                                  OpaqueFunction=type("Opaque", (Recorded,), {})),
        "launch.launch_description_sources": _module("launch.launch_description_sources",
                                                     PythonLaunchDescriptionSource=Recorded),
        "launch.substitutions": _module("launch.substitutions", LaunchConfiguration=LaunchConfiguration),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", Node=type("Node", (Recorded,), {})),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)

    def load(path: Path):
        spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def run_launch(module, **given) -> tuple[dict, list]:
    """generate_launch_description(), then its OpaqueFunction with the defaults plus `given`."""
    description = module.generate_launch_description()
    (entities,) = description.args
    declared = {e.kwargs["name"] if "name" in e.kwargs else e.args[0]: e.kwargs for e in entities
                if type(e).__name__ == "Declare"}
    (opaque,) = [e for e in entities if type(e).__name__ == "Opaque"]
    context = {name: kw["default_value"] for name, kw in declared.items()} | given
    return declared, opaque.kwargs["function"](context)
