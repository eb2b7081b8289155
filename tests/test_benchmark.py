"""rs-guard bench's measurements run on the user's configuration and leave it as it was."""
from rs_guard_ros import benchmark
from rs_guard_ros.guard import Guard
from test_guard import BrightSidePolicy, left_bright_frame, make_guard


class Babbler(BrightSidePolicy):
    """STAND-IN: says something no command means (UNKNOWN) for every frame."""

    def __call__(self, frames, instruction):
        return ["the weather is nice"] * len(frames)

KEYS = {"raw_samples_per_s", "guard_samples_per_s", "throughput_ratio", "latency_p50_ms", "latency_p99_ms",
        "median_n_used_sequential", "n_min", "device", "path_samples_per_s", "decision_overhead_ms",
        "cuda_max_allocated_mb"}


def test_bench_reports_every_figure_from_the_users_config_and_restores_it():
    guard = make_guard(**{"smoothing.mode": "sequential", "smoothing.n0": 10, "smoothing.n_max": 5000})
    before = guard.cfg
    result = benchmark.run(guard, left_bright_frame(), "go", decisions=3)
    assert KEYS <= set(result) and guard.cfg == before
    assert result["command"] == "left" and result["n0"] == 10
    # A consistent stand-in certifies at its first sequential look: n0 + ~1.1 n_min samples.
    assert result["median_n_used_sequential"] < 10 + 2 * result["n_min"]
    assert result["fixed_n"] == 5010
    assert result["cuda_max_allocated_mb"] is None  # a CPU stand-in


def test_bench_progress_goes_to_stderr_and_counts_samples(capsys):
    guard = make_guard(**{"smoothing.mode": "sequential", "smoothing.n0": 10, "smoothing.n_max": 500})
    benchmark.run(guard, left_bright_frame(), "go", decisions=3, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "rs-guard bench: 100%" in captured.err and "sample" in captured.err
    benchmark.run(guard, left_bright_frame(), "go", decisions=3)  # progress is off by default (library use)
    assert capsys.readouterr().err == ""


def test_decision_cost_times_three_sizes_even_when_the_model_says_unknown():
    """A decision whose top label is UNKNOWN stops after its n0 selection samples; the sizes still
    differ because n0 is what varies."""
    guard = make_guard(**{"smoothing.n0": 10, "smoothing.batch_size": 40})
    assert benchmark.cost_sizes(guard.cfg) == ((10, 10), (40, 10), (120, 10))
    cost = benchmark.decision_cost(guard, left_bright_frame(), "go", repeats=1)
    assert cost["sizes"] == [20, 50, 130] and cost["decisions"] == 3 and cost["samples_per_s"] > 0
    babbling = Guard(Babbler(), guard.oracle, guard.cfg)
    unknown = benchmark.decision_cost(babbling, left_bright_frame(), "go", repeats=1)
    assert unknown["sizes"] == [10, 40, 120] and unknown["reasons"] == ["unknown_output"]
    assert unknown["samples_per_s"] > 0 and unknown["overhead_s"] >= 0
    assert benchmark.decision_cost_samples(guard.cfg, 1) == 20 + (20 + 50 + 130)


def test_issue16_bench_streams_its_sequential_decisions_and_shows_how_each_chose_its_command():
    """Each sequential decision is offered the command the one before certified, as on the node:
    with smoothing.selection previous only the first spends n0 selection samples; with samples all do."""
    for selection, expected in (("previous", {"samples": 1, "previous": 4}), ("samples", {"samples": 5})):
        guard = make_guard(**{"smoothing.mode": "sequential", "smoothing.n0": 10, "smoothing.n_max": 500,
                              "smoothing.selection": selection})
        result = benchmark.run(guard, left_bright_frame(), "go", decisions=5)
        sel = result["sequential_selection"]
        assert result["selection_config"] == selection and sel["selection"] == expected
        assert sel["n_selection"] == (0 if selection == "previous" else 10)
        assert sel["n_estimation"] + sel["n_selection"] == result["median_n_used_sequential"]
        assert f"smoothing.selection {selection}" in benchmark.format_report(result)
