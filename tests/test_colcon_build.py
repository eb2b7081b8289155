"""`colcon build` installs the package as on a robot: launch/config files, executables, index."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__", "demo_out", "*.egg-info",
                              ".pytest_cache", ".hypothesis")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(ROOT, ws / "src" / "rs_guard_ros", ignore=SKIP)
    colcon = Path(sys.executable).parent / "colcon"
    subprocess.run([str(colcon), "build", "--base-paths", "src", "--build-base", "build", "--install-base",
                    "install"], cwd=ws, check=True, capture_output=True, timeout=300)
    return ws / "install" / "rs_guard_ros"


def test_colcon_installs_package_index_manifest_and_every_config_and_launch_file(installed):
    share = installed / "share" / "rs_guard_ros"
    assert (installed / "share" / "ament_index" / "resource_index" / "packages" / "rs_guard_ros").is_file()
    assert (share / "package.xml").is_file()
    for folder in ("config", "launch"):
        shipped = sorted(p.name for p in (ROOT / folder).glob("*.yaml" if folder == "config" else "*.py"))
        assert shipped and sorted(p.name for p in (share / folder).iterdir() if p.is_file()) == shipped
    for sub in ("gazebo", "scenarios"):
        shipped = sorted(p.name for p in (ROOT / "config" / sub).iterdir())
        assert shipped and sorted(p.name for p in (share / "config" / sub).iterdir()) == shipped


def test_installed_demo_finds_its_config_in_the_share_directory(installed):
    site = next(installed.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               AMENT_PREFIX_PATH=str(installed))
    code = "from rs_guard_ros.sim.demo import config_file; print(config_file('scenarios/demo.yaml'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=installed).stdout.strip()
    assert out == str(installed / "share" / "rs_guard_ros" / "config" / "scenarios" / "demo.yaml")


def test_colcon_installs_runnable_executables_where_ros2_run_finds_them(installed):
    lib = installed / "lib" / "rs_guard_ros"
    assert os.access(lib / "rs_guard_node", os.X_OK) and os.access(lib / "rs-guard", os.X_OK)
    site = next(installed.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, str(lib / "rs-guard"), "plan", "--sigma", "0.25", "--radius", "0.5",
                          "--json"], env=env, capture_output=True, text=True, check=True, cwd=installed)
    assert '"n_min": 301' in out.stdout
    where = subprocess.run([sys.executable, "-c", "import rs_guard_ros; print(rs_guard_ros.__file__)"], env=env,
                           capture_output=True, text=True, check=True, cwd=installed).stdout
    assert where.startswith(str(site)), "the installed copy, not the source tree, must be imported"


def test_colcon_installs_the_demo_model_files_inside_the_package(installed):
    site = next(installed.glob("lib/python3*/site-packages"))
    shipped = sorted(p.name for p in (ROOT / "rs_guard_ros" / "models" / "demo_vla").iterdir())
    assert shipped and sorted(p.name for p in (site / "rs_guard_ros" / "models" / "demo_vla").iterdir()) == shipped
