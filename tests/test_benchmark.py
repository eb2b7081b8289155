"""rs-guard bench's measurements run on the user's configuration and leave it as it was."""
from rs_guard_ros import benchmark
from test_guard import left_bright_frame, make_guard

KEYS = {"raw_samples_per_s", "guard_samples_per_s", "throughput_ratio", "latency_p50_ms", "latency_p99_ms",
        "median_n_used_sequential", "n_min", "device"}


def test_bench_reports_every_figure_from_the_users_config_and_restores_it():
    guard = make_guard(**{"smoothing.mode": "sequential", "smoothing.n0": 10, "smoothing.n_max": 5000})
    before = guard.cfg
    result = benchmark.run(guard, left_bright_frame(), "go", decisions=3)
    assert KEYS <= set(result) and guard.cfg == before
    assert result["command"] == "left" and result["n0"] == 10
    # A consistent stand-in certifies at its first sequential look: n0 + ~1.1 n_min samples.
    assert result["median_n_used_sequential"] < 10 + 2 * result["n_min"]
    assert result["fixed_n"] == 5010
