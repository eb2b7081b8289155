"""The install paths of docs/install.md, checked as far as this machine allows. Nothing here
installs into the project's venv: pip only resolves (--dry-run) or works on throwaway venvs.

- requirements-robot.txt: ranges, no torch, no ROS wheels; consistent with setup.py and
  package.xml; it RESOLVES against PyPI for CPython 3.10 and 3.12 on manylinux x86_64 and
  aarch64 (Humble, Jazzy/Kilted, Jetson), so a pin that breaks a robot fails here (skipped
  only when PyPI cannot be reached);
- requirements-jazzy.txt (the `make test-jazzy` environment): every line pinned, its non-ROS
  pins those of requirements-dev.txt; it resolves for CPython 3.11 manylinux x86_64 (the
  Jazzy wheels are cp311) with every ROS package pinned and no torch pulled in. A Jazzy
  robot (Python 3.12) installs requirements-robot.txt instead: its ROS comes from apt;
- pip keeps a robot's own torch (a JetPack pre-release or a CUDA build) when installing the
  package, and would replace a too-old one (offline: fake installed torch, --no-index);
- the robot set is enough: from a site holding only it, torch and the ROS 2 wheels, the
  node and the CLI import and transformers loads the shipped demo VLA; the source compiles
  on Python 3.10 and 3.12;
- `colcon build` run by a robot venv's python (`python -m colcon`, as docs/install.md says)
  writes that python into the installed entry points, with or without --symlink-install, and
  they run; colcon run by another python (an apt `colcon` while the venv is active) writes
  its own python instead. The robot venv sees the development venv's packages through a .pth
  file, standing in for --system-site-packages and the ROS install.
"""
import ast
import glob
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
import urllib.request
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
ROBOT_REQUIREMENTS = ROOT / "requirements-robot.txt"
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"
JAZZY_REQUIREMENTS = ROOT / "requirements-jazzy.txt"
SETUP = ROOT / "setup.py"
PACKAGE_XML = ROOT / "package.xml"
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__", "demo_out", "*.egg-info",
                              ".pytest_cache", ".hypothesis")

# (python, machine, glibc minor, what runs it): Ubuntu 22.04 has glibc 2.35, 24.04 has 2.39.
TARGETS = [
    ("3.10", "x86_64", 35, "Humble, Ubuntu 22.04"),
    ("3.10", "aarch64", 35, "Humble on a Jetson, JetPack 6"),
    ("3.12", "x86_64", 39, "Jazzy or Kilted, Ubuntu 24.04"),
    ("3.12", "aarch64", 39, "Jazzy or Kilted on arm64, JetPack 7"),
]
# Where requirements-jazzy.txt is installed: a development or CI machine (the wheels are cp311).
JAZZY_TEST_TARGET = ("3.11", "x86_64")
# Robots bring these themselves (docs/install.md); none may come from requirements-robot.txt.
BRING_YOUR_OWN = {"torch", "torchvision", "torchaudio", "triton", "onnxruntime-gpu"}
# Versions of torch a robot may already have: NVIDIA's JetPack 6 wheels, a CUDA desktop
# build, a plain PyPI release; and Debian 12's apt python3-torch, which is too old.
KEEPS_TORCH = ["2.5.0a0+872d972e41.nv24.08", "2.3.0a0+40ec155e58.nv24.03", "2.7.1+cu126", "2.4.1"]
REPLACES_TORCH = ["1.13.1"]
# rosdep keys in ros/rosdistro rosdep/python.yaml (checked at rosdistro 8468e88) that map to
# apt packages, and the PyPI project each stands for in requirements-robot.txt.
ROSDEP_PYTHON_KEYS = {"python3-numpy": "numpy", "python3-scipy": "scipy", "python3-opencv": "opencv-python-headless",
                      "python3-yaml": "pyyaml", "python3-tqdm": "tqdm", "python3-psutil": "psutil",
                      "python3-pil": "pillow", "python3-pytest": None}


# ----------------------------------------------------------------------------- reading the files
def robot_requirements(optional: bool = True) -> list[Requirement]:
    """requirements-robot.txt; `# optional: <requirement>` lines are the commented-out extras."""
    out = []
    for line in ROBOT_REQUIREMENTS.read_text().splitlines():
        line = line.strip()
        if line.startswith("# optional:"):
            if optional:
                out.append(Requirement(line.split(":", 1)[1].strip()))
            continue
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(Requirement(line))
    return out


def robot_by_name(optional: bool = True) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in robot_requirements(optional)}


def pinned(path: Path) -> dict[str, Requirement]:
    """A requirements file of one requirement per line (comments allowed), by canonical name."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(r.name): r for r in map(Requirement, filter(None, lines))}


def pin(req: Requirement) -> str | None:
    """The version of an `==` pin, else None."""
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


@lru_cache(maxsize=1)
def setup_kwargs() -> dict:
    """The literal keyword arguments of setup() in setup.py."""
    tree = ast.parse(SETUP.read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup")
    wanted = ("install_requires", "extras_require", "python_requires", "classifiers")
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg in wanted}


def setup_requirements() -> list[Requirement]:
    """install_requires and the `models` extra (the transformers backend every robot runs)."""
    kw = setup_kwargs()
    return [Requirement(r) for r in kw["install_requires"] + kw["extras_require"]["models"]]


def bounds(spec: SpecifierSet) -> tuple[Version | None, Version | None]:
    """The lowest and the (exclusive or inclusive) highest version a specifier set names."""
    lower = upper = None
    for s in spec:
        v = Version(s.version.replace(".*", ""))
        if s.operator in (">=", ">", "~=") and (lower is None or v > lower):
            lower = v
        if s.operator in ("<", "<=") and (upper is None or v < upper):
            upper = v
        if s.operator == "~=":
            release = v.release[:-1] if len(v.release) > 1 else v.release
            cap = Version(".".join(map(str, release[:-1] + (release[-1] + 1,))))
            upper = cap if upper is None or cap < upper else upper
    return lower, upper


# ----------------------------------------------------------------------------- static checks
def test_robot_requirements_are_ranges_without_torch_or_ros_wheels():
    for req in robot_requirements():
        name = canonicalize_name(req.name)
        operators = {s.operator for s in req.specifier}
        assert not operators & {"==", "==="}, f"{req}: a pin; robots need ranges (pins: requirements-dev.txt)"
        lower, upper = bounds(req.specifier)
        assert lower is not None and upper is not None, f"{req}: give a range with both ends"
        assert req.url is None and not req.extras, req
        assert name not in BRING_YOUR_OWN and not name.startswith("nvidia-"), f"{req}: robots bring their own"
        assert not name.startswith("ros-") and name != "rclpy", f"{req}: ROS 2 comes from apt on a robot"
    text = "\n".join(line.split("#", 1)[0] for line in ROBOT_REQUIREMENTS.read_text().splitlines())
    assert "torch" not in text.lower()


def test_jazzy_requirements_are_all_pinned_and_share_the_development_pins():
    jazzy, dev = pinned(JAZZY_REQUIREMENTS), pinned(DEV_REQUIREMENTS)
    for name, req in jazzy.items():
        assert pin(req) is not None and req.marker is None and not req.extras, f"{req}: pin it (==)"
        if not name.startswith("ros-"):
            assert name in dev and pin(dev[name]) == pin(req), f"{req}: requirements-dev.txt pins {dev.get(name)}"
    assert "torch" in jazzy and {"ros-jazzy-rclpy", "ros-rclpy"} <= set(jazzy)
    assert pin(jazzy["ros-jazzy-rclpy"]) == pin(jazzy["ros-rclpy"])  # the meta-package pins rclpy's own version


def test_robot_numpy_stays_below_2_for_ros_2s_apt_message_packages():
    """rosidl_generator_py's C extensions (and cv_bridge) are built against the distro's NumPy 1.x."""
    _, upper = bounds(robot_by_name()["numpy"].specifier)
    assert upper is not None and upper <= Version("2")


def test_every_setup_requirement_is_in_the_robot_set_with_a_compatible_range():
    robot = robot_by_name()
    for req in setup_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":
            continue  # the robot's own (test below)
        assert name in robot, f"setup.py needs {req}; requirements-robot.txt lacks it"
        r_lower, r_upper = bounds(robot[name].specifier)
        assert req.specifier.contains(r_lower, prereleases=True), \
            f"{robot[name]} allows {r_lower}, which setup.py's {req} refuses"
        _, s_upper = bounds(req.specifier)
        assert s_upper is None or (r_upper is not None and r_upper <= s_upper), (req, robot[name])


def test_setup_keeps_torch_a_range_a_robots_own_torch_satisfies():
    (torch,) = [r for r in setup_requirements() if canonicalize_name(r.name) == "torch"]
    assert not {s.operator for s in torch.specifier} & {"==", "==="}
    for version in KEEPS_TORCH:  # installed pre-releases count: pip checks them with prereleases=True
        assert torch.specifier.contains(version, prereleases=True), version
    for version in REPLACES_TORCH:
        assert not torch.specifier.contains(version, prereleases=True), version


def test_python_requires_and_classifiers_cover_humble_and_jazzy():
    kw = setup_kwargs()
    spec = SpecifierSet(kw["python_requires"])
    for python, *_ in TARGETS:
        assert spec.contains(python), python
        assert f"Programming Language :: Python :: {python}" in kw["classifiers"]


def test_package_xml_names_only_rosdep_keys_that_exist_and_match_the_robot_set():
    keys = [e.text.strip() for e in ET.parse(PACKAGE_XML).getroot()
            if e.tag in ("exec_depend", "depend", "build_depend", "test_depend") and e.text.startswith("python3-")]
    robot = robot_by_name()
    for key in keys:
        assert key in ROSDEP_PYTHON_KEYS, f"{key}: not a rosdep key checked against rosdistro"
        assert not key.endswith("-pip"), f"{key}: a pip key makes rosdep pip-install outside the venv"
        if ROSDEP_PYTHON_KEYS[key]:
            assert canonicalize_name(ROSDEP_PYTHON_KEYS[key]) in robot, key
    assert "python3-torch" not in keys, "rosdep's python3-torch is the distro's CPU build"
    assert "<license>Apache-2.0</license>" in PACKAGE_XML.read_text()
    license_text = (ROOT / "LICENSE").read_text()
    for line in ("Apache License", "Version 2.0, January 2004", "END OF TERMS AND CONDITIONS"):
        assert line in license_text


def _closure(roots) -> set[str]:
    """The installed distributions `roots` need, transitively (extras not taken)."""
    from importlib import metadata

    seen, todo = set(), [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def _robot_site(tmp: Path, allowed: set[str]) -> Path:
    """A site directory holding (as symlinks into this venv) only the `allowed` distributions."""
    from importlib import metadata

    real = Path(sysconfig.get_paths()["purelib"])
    site = tmp / "robot_site"
    site.mkdir()
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in allowed:
            continue
        for entry in {Path(f).parts[0] for f in dist.files or []} - {".."}:
            if (real / entry).exists() and not (site / entry).exists():
                (site / entry).symlink_to(real / entry)
    return site


def test_the_node_cli_and_demo_vla_work_with_only_the_robot_set(tmp_path):
    """A site with only what the robot set, torch and the ROS 2 wheels pull in (no matplotlib,
    mujoco, ART, ... nor what they brought, e.g. Pillow): the node and the CLI import, and
    transformers loads the shipped demo VLA and its image processor from it."""
    from importlib import metadata

    installed = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()}
    ros = {d for d in installed if d.startswith("ros-")}
    allowed = _closure(set(robot_by_name(optional=False)) | {"torch"} | ros)
    assert not {"matplotlib", "mujoco", "adversarial-robustness-toolbox", "hypothesis"} & allowed
    site = _robot_site(tmp_path, allowed)
    script = tmp_path / "robot_imports.py"
    script.write_text(
        "import site, sys, importlib\n"
        f"site.addsitedir({str(site)!r})\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "for m in ('rs_guard_ros.ros.node', 'rs_guard_ros.cli', 'rs_guard_ros.guard', 'rs_guard_ros.smoothing',\n"
        "          'rs_guard_ros.policies.transformers_policy', 'rs_guard_ros.policies.onnx_policy'):\n"
        "    importlib.import_module(m)\n"
        "for absent in ('matplotlib', 'mujoco', 'art', 'hypothesis'):\n"
        "    assert importlib.util.find_spec(absent) is None, absent\n"
        "import transformers\n"
        "root = 'rs_guard_ros/models/demo_vla'\n"
        "transformers.AutoProcessor.from_pretrained(root, local_files_only=True)\n"
        "auto = getattr(transformers, 'AutoModelForImageTextToText', None) or transformers.AutoModelForVision2Seq\n"
        "auto.from_pretrained(root, local_files_only=True)\n"
        "print('ok')\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    # -S: not this venv's site-packages, only the robot site added above
    done = subprocess.run([sys.executable, "-S", str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def _interpreter(version: str) -> str | None:
    """A CPython `version` on this machine (pyenv keeps several), or None."""
    candidates = [shutil.which(f"python{version}"), f"/usr/bin/python{version}"]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    for path in filter(None, candidates):
        try:
            out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return path
    return None


@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_the_package_compiles_on_the_robots_python(version):
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    files = [str(p) for folder in ("rs_guard_ros", "launch", "config/robot_chain")
             for p in (ROOT / folder).rglob("*.py")]
    code = ("import sys\nbad = []\nfor f in sys.stdin.read().split():\n"
            "    try:\n        compile(open(f, encoding='utf-8').read(), f, 'exec', dont_inherit=True)\n"
            "    except SyntaxError as e:\n        bad.append(f'{f}:{e.lineno}: {e.msg}')\nprint('\\n'.join(bad))\n")
    out = subprocess.run([python, "-c", code], input="\n".join(files), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


# ----------------------------------------------------------------------------- pip, offline
def _pip_env() -> dict:
    """pip without this machine's configuration (its local wheel folders and constraints
    are not what a robot has): no config file, no PIP_* variables; the CA bundle is kept."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _pip(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cert = os.environ.get("PIP_CERT")
    command = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check"]
    command += ["--cert", cert] if cert else []
    return subprocess.run(command + list(args), env=_pip_env(), capture_output=True, text=True, timeout=timeout)


def _venv_with_system_site(tmp: Path, system_site: Path, name: str = "robot") -> Path:
    """A venv (no pip) that sees `system_site` the way --system-site-packages sees the distro's."""
    venv = tmp / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", where],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_system_site.pth").write_text(f"{system_site}\n")
    return venv


@pytest.mark.parametrize("installed,kept", [(v, True) for v in KEEPS_TORCH] + [(v, False) for v in REPLACES_TORCH])
def test_pip_keeps_the_torch_a_robot_already_has(tmp_path, installed, kept):
    """A torch outside the venv (JetPack's, a CUDA build) satisfies setup.py's torch
    requirement, so `pip install` of the package leaves it alone; an old one would be
    replaced (here: pip looks for one and, with --no-index, finds none)."""
    system = tmp_path / "system"
    info = system / f"torch-{installed}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {installed}\n")
    (info / "INSTALLER").write_text("pip\n")
    venv = _venv_with_system_site(tmp_path, system)
    (torch,) = [str(r) for r in setup_requirements() if canonicalize_name(r.name) == "torch"]
    report = tmp_path / "report.json"
    done = _pip("--python", str(venv / "bin" / "python"), "install", "--dry-run", "--no-index",
                "--report", str(report), torch)
    if kept:
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(report.read_text())["install"] == [], "pip would replace the robot's torch"
    else:
        assert done.returncode != 0 and "torch" in done.stderr


# ----------------------------------------------------------------------------- pip, against PyPI
@lru_cache(maxsize=1)
def pypi_reachable() -> bool:
    cafile = os.environ.get("PIP_CERT") or None
    try:
        context = ssl.create_default_context(cafile=cafile)
        request = urllib.request.Request("https://pypi.org/simple/pip/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=15, context=context) as response:
            return response.status == 200
    except OSError:
        return False


needs_pypi = pytest.mark.skipif("not pypi_reachable()", reason="PyPI is not reachable from here")


def _resolve(tmp_path: Path, python: str, machine: str, glibc: int | None, *requirements: str,
             requirement_file: Path | None = None) -> tuple[subprocess.CompletedProcess, dict | None]:
    """pip's resolution for another Python and platform, from binary wheels only, installing
    nothing (--dry-run --ignore-installed); the --report as a dict (None when it failed).
    glibc None: for this interpreter and machine (`python`, `machine` must be theirs), where pip
    may also read an sdist's metadata, as `pip install` would (empy, which rosidl needs, has no wheel)."""
    report = tmp_path / f"resolve-{python}-{machine}.json"
    args = ["install", "--dry-run", "--ignore-installed", "--report", str(report), "--quiet"]
    if glibc is None:
        assert (python, machine) == ("%d.%d" % sys.version_info[:2], platform.machine()), "not this interpreter"
    else:
        args += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
        for m in [*range(17, glibc + 1), 2014]:
            args += ["--platform", f"manylinux_2_{m}_{machine}" if m != 2014 else f"manylinux2014_{machine}"]
    if requirement_file is not None:
        args += ["-r", str(requirement_file)]
    done = _pip(*args, *requirements)
    return done, (json.loads(report.read_text()) if done.returncode == 0 else None)


@pytest.fixture
def venv_untouched():
    """The project's venv has exactly the same distributions after the test."""
    site = Path(sysconfig.get_paths()["purelib"])
    before = sorted(os.listdir(site))
    yield
    assert sorted(os.listdir(site)) == before, "a test installed into the project's venv"


@pytest.mark.slow
@needs_pypi
@pytest.mark.parametrize("python,machine,glibc,robot", TARGETS, ids=[f"py{t[0]}-{t[1]}" for t in TARGETS])
def test_robot_requirements_resolve_for_every_robot_python_and_machine(tmp_path, venv_untouched,
                                                                       python, machine, glibc, robot):
    # the optional lines too, uncommented
    requirement_file = tmp_path / "requirements.txt"
    requirement_file.write_text("\n".join(str(r) for r in robot_requirements(optional=True)) + "\n")
    done, report = _resolve(tmp_path, python, machine, glibc, requirement_file=requirement_file)
    assert done.returncode == 0, f"requirements-robot.txt does not resolve for {robot}:\n{done.stderr[-4000:]}"
    resolved = {canonicalize_name(item["metadata"]["name"]): Version(item["metadata"]["version"])
                for item in report["install"]}
    for name in resolved:
        assert name not in BRING_YOUR_OWN and not name.startswith("nvidia-"), f"{name} pulled in for {robot}"
        assert not name.startswith("ros-"), name
    for req in robot_requirements(optional=True):
        assert req.specifier.contains(resolved[canonicalize_name(req.name)], prereleases=True), req
    for req in setup_requirements():
        if canonicalize_name(req.name) != "torch":
            assert req.specifier.contains(resolved[canonicalize_name(req.name)], prereleases=True), \
                f"{robot}: resolved {req.name} {resolved[canonicalize_name(req.name)]} is outside setup.py's {req}"
    assert resolved["numpy"] < Version("2")


@pytest.mark.slow
@needs_pypi
def test_jazzy_requirements_resolve_with_every_ros_package_pinned_and_no_torch_pulled_in(tmp_path, venv_untouched):
    """Without its torch line (installed from the machine's own index: the CPU build), the set
    resolves, pulls in no torch and no CUDA, and each ROS package it brings is pinned in the file."""
    python, machine = JAZZY_TEST_TARGET
    if ("%d.%d" % sys.version_info[:2], platform.machine()) != JAZZY_TEST_TARGET:
        pytest.skip(f"resolved where it is installed: CPython {python} on {machine}")
    requirement_file = tmp_path / "requirements.txt"
    requirement_file.write_text("\n".join(str(r) for name, r in pinned(JAZZY_REQUIREMENTS).items() if name != "torch"))
    done, report = _resolve(tmp_path, python, machine, None, requirement_file=requirement_file)
    assert done.returncode == 0, f"requirements-jazzy.txt does not resolve:\n{done.stderr[-4000:]}"
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}
    assert not {name for name in resolved if name in BRING_YOUR_OWN or name.startswith("nvidia-")}
    jazzy = pinned(JAZZY_REQUIREMENTS)
    unpinned = {f"{name}=={v}" for name, v in resolved.items() if name.startswith("ros-") and name not in jazzy}
    assert not unpinned, f"pin these in requirements-jazzy.txt: {sorted(unpinned)}"
    assert resolved["ros-rclpy"] == pin(jazzy["ros-rclpy"])


@pytest.mark.slow
@needs_pypi
def test_the_resolution_check_fails_for_a_pin_without_a_python_3_10_build(tmp_path, venv_untouched):
    """numpy 2.3 needs Python >= 3.11: the same resolution as above must refuse it for 3.10."""
    done, report = _resolve(tmp_path, "3.10", "x86_64", 35, "numpy==2.3.0")
    assert done.returncode != 0 and report is None
    assert "numpy" in done.stderr


# ----------------------------------------------------------------------------- colcon from a venv
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("robot")
    shutil.copytree(ROOT, tmp / "ws" / "src" / "rs_guard_ros", ignore=SKIP)
    return tmp


@pytest.fixture(scope="module")
def robot_venv(workspace) -> Path:
    """The robot's venv: it sees the development venv's packages (numpy, rclpy, colcon...) as
    a --system-site-packages venv sees /usr/lib/python3/dist-packages."""
    return _venv_with_system_site(workspace, Path(sysconfig.get_paths()["purelib"]))


def _colcon_build(workspace: Path, robot_venv: Path, colcon: list[str], tag: str, *extra: str) -> Path:
    """Build with the robot venv active (VIRTUAL_ENV, PATH) by `colcon`; the install prefix."""
    env = dict(os.environ, VIRTUAL_ENV=str(robot_venv), PATH=f"{robot_venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONHOME", None)
    done = subprocess.run(colcon + ["build", "--base-paths", "src", "--build-base", f"build_{tag}",
                                    "--install-base", f"install_{tag}", *extra],
                          cwd=workspace / "ws", env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return workspace / "ws" / f"install_{tag}" / "rs_guard_ros"


def _shebang(script: Path) -> str:
    return script.read_text().splitlines()[0]


ENTRY_POINTS = ("rs_guard_node", "rs-guard", "rs_guard_sim")


@pytest.mark.slow
@pytest.mark.parametrize("symlink", [False, True], ids=["install", "symlink-install"])
def test_colcon_run_by_the_venvs_python_writes_it_into_the_entry_points(workspace, robot_venv, symlink):
    python = robot_venv / "bin" / "python"
    prefix = _colcon_build(workspace, robot_venv, [str(python), "-m", "colcon"], f"venv_{symlink}",
                           *(["--symlink-install"] if symlink else []))
    for name in ENTRY_POINTS:
        assert _shebang(prefix / "lib" / "rs_guard_ros" / name) == f"#!{python}", name
    chain = ROOT / "config" / "robot_chain"
    installed = prefix / "share" / "rs_guard_ros" / "config" / "robot_chain"
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in chain.iterdir() if p.is_file())
    if symlink:
        return
    # what `ros2 run rs_guard_ros rs-guard ...` does after `source install/setup.bash`: exec the
    # script itself, so its shebang picks the interpreter
    site = next(prefix.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(prefix))
    out = subprocess.run([str(prefix / "lib" / "rs_guard_ros" / "rs-guard"), "plan", "--sigma", "0.25", "--radius",
                          "0.5", "--json"], env=env, capture_output=True, text=True, timeout=300, cwd=prefix)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["n_min"] == 301


@pytest.mark.slow
def test_colcon_run_by_another_python_ignores_the_active_venv(workspace, robot_venv):
    """The pitfall docs/install.md warns about: an apt `colcon` (#!/usr/bin/python3) builds with
    its own python even while the venv is active, and the entry points then run without the
    venv's packages. Here the other python is the development venv's."""
    colcon = Path(sys.executable).parent / "colcon"
    prefix = _colcon_build(workspace, robot_venv, [str(colcon)], "other")
    interpreter = _shebang(colcon)
    assert re.match(r"#!\S*python", interpreter)
    for name in ENTRY_POINTS:
        shebang = _shebang(prefix / "lib" / "rs_guard_ros" / name)
        assert shebang == interpreter != f"#!{robot_venv / 'bin' / 'python'}", name
