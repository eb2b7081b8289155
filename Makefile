# One-command set-up, tests and demo. `make test` and `make demo` work on a fresh
# machine: they create .venv, install the pinned requirements and this package,
# and (as root) the Debian packages MuJoCo's CPU renderer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := libosmesa6
export MUJOCO_GL ?= osmesa
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test demo bench clean

setup: $(STAMP)

# Where the system already provides rclpy (a robot with ROS 2 sourced) the venv sees
# it and the PyPI ROS wheels are skipped; elsewhere the wheels are installed.
$(STAMP): requirements-dev.txt setup.py setup.cfg
	@if [ "$$(id -u)" = 0 ]; then \
	  dpkg -s $(DEBS) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS); }; \
	else \
	  dpkg -s $(DEBS) >/dev/null 2>&1 || echo "rs_guard_ros: MuJoCo rendering needs: sudo apt-get install -y $(DEBS)"; \
	fi
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
	$(PY) -m pytest

# The closed loop: MuJoCo robot, guard node and scenario runner as ROS 2 processes in a
# random ROS_DOMAIN_ID (localhost discovery only); report in demo_out/report.md.
demo: setup
	$(VENV)/bin/rs-guard demo --out demo_out

bench: setup
	$(PY) benchmarks/bench_certify.py

clean:
	rm -rf $(VENV) build install log demo_out *.egg-info
