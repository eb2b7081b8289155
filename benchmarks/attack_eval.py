"""Full attack evaluation of the demo gate (not run in CI): every attack, base and EOT, plus the
guarantee check, on enough held-out scenes for the release note. Prints the table (the clean
row is the baseline every attacked row compares with) and the wall time.

    MUJOCO_GL=osmesa HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/attack_eval.py --out /tmp/rs_guard_attack

Same flags as `rs-guard attack` (--steps, --eot-samples, --attacks, --config FILE, --smoothing.*);
the defaults here are a stronger attacker than the CLI's: 45 scenes, 8 EOT draws.
"""
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rs_guard_ros import cli  # noqa: E402  (environment first)

DEFAULTS = ["--scenes", "45", "--eot-samples", "8", "--out", "/tmp/rs_guard_attack"]

if __name__ == "__main__":
    start = time.perf_counter()
    code = cli.main(["attack", *DEFAULTS, *sys.argv[1:]])  # later flags win
    print(f"wall time {time.perf_counter() - start:.0f} s ({os.cpu_count()} CPUs)")
    sys.exit(code)
