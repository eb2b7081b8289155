# One-command set-up, tests and demo. `make test` and `make demo` work on a fresh
# machine: they create .venv, install the pinned requirements and this package,
# and (as root) the Debian packages MuJoCo's CPU renderer needs. `make test-jazzy`
# runs every test that starts rclpy again on ROS 2 Jazzy's wheels, in .venv-jazzy.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JAZZY_VENV := .venv-jazzy
JAZZY_PY := $(JAZZY_VENV)/bin/python
JAZZY_STAMP := $(JAZZY_VENV)/.installed
# Every test file that starts rclpy (in-process or in child processes), and the ROS adapter's (test_ros_*.py).
JAZZY_TESTS := $(sort $(wildcard tests/test_node*.py tests/test_ros_*.py)) tests/test_launch.py \
	tests/test_robot_chain.py tests/test_robot_configs.py tests/test_sim_bridge.py tests/test_sim_demo.py \
	tests/test_doctor_ros.py
DEBS := libosmesa6
# Test processes (pytest-xdist, one test file per process): most ROS tests wait on DDS,
# timers and child processes, so three share a 2-core machine well. TEST_WORKERS=0: serial.
# Files go out in collection order, the longest first (tests/conftest.py LONGEST_FIRST).
TEST_WORKERS ?= 3
PYTEST_ARGS := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
export MUJOCO_GL ?= osmesa
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test test-jazzy demo bench clean debs

setup: $(STAMP)

debs:
	@if [ "$$(id -u)" = 0 ]; then \
	  dpkg -s $(DEBS) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS); }; \
	else \
	  dpkg -s $(DEBS) >/dev/null 2>&1 || echo "rs_guard_ros: MuJoCo rendering needs: sudo apt-get install -y $(DEBS)"; \
	fi

# Where the system already provides rclpy (a robot with ROS 2 sourced) the venv sees
# it and the PyPI ROS wheels are skipped; elsewhere the wheels are installed.
$(STAMP): requirements-dev.txt setup.py setup.cfg | debs
	@if $(PYTHON) -c 'import rclpy' 2>/dev/null; then \
	  echo "rs_guard_ros: system rclpy found; using it instead of the PyPI ROS 2 wheels"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	  grep -v '^ros-' requirements-dev.txt > $(VENV)/requirements.txt; \
	else \
	  $(PYTHON) -m venv $(VENV); \
	  cp requirements-dev.txt $(VENV)/requirements.txt; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(VENV)/requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Always the PyPI Jazzy wheels (CPython 3.11: they are cp311), never a system rclpy; the
# first line refuses to go on when the interpreter would import another distribution's.
$(JAZZY_STAMP): requirements-jazzy.txt setup.py setup.cfg | debs
	$(PYTHON) -m venv $(JAZZY_VENV)
	$(JAZZY_PY) -m pip install -q --upgrade pip
	$(JAZZY_PY) -m pip install -q -r requirements-jazzy.txt
	$(JAZZY_PY) -m pip install -q --no-deps -e .
	touch $(JAZZY_STAMP)

test-jazzy: $(JAZZY_STAMP)
	@$(JAZZY_PY) -c 'from rs_guard_ros.ros_distro import format_ros, ros_environment; r = ros_environment(); \
	  print("rs_guard_ros:", format_ros(r)); raise SystemExit(0 if r["distro"] == "jazzy" else \
	  "make test-jazzy: that is not Jazzy; run it where no other ROS 2 is sourced")'
	$(JAZZY_PY) -m pytest $(PYTEST_ARGS) $(JAZZY_TESTS)

# The closed loop: MuJoCo robot, guard node and scenario runner as ROS 2 processes in a
# random ROS_DOMAIN_ID (localhost discovery only); report in demo_out/report.md.
demo: setup
	$(VENV)/bin/rs-guard demo --out demo_out

bench: setup
	$(PY) benchmarks/bench_certify.py

clean:
	rm -rf $(VENV) $(JAZZY_VENV) build install log demo_out *.egg-info
