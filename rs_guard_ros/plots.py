"""PNG plots of an offline evaluation (`rs-guard eval`), drawn with matplotlib's Agg renderer.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never
pyplot, so no global backend is chosen and nothing needs a display.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

CERTIFIED, ABSTAINED, THRESHOLD = "tab:green", "tab:red", "0.45"
RADIUS_AXIS = "certified l2 radius (model input, [0,1] intensity)"


def figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.4, 4.0), layout="tight")
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=100, format="png")  # Figure.savefig renders PNG through Agg
    return str(path)


def certified_accuracy_plot(radii: Sequence[float], accuracy: Sequence[float], thresholds: dict[str, float],
                            path: Path) -> str:
    """The randomized-smoothing curve: certified accuracy as a step function of the radius,
    with a dashed line at each command's publishing threshold."""
    fig, ax = figure()
    ax.step(radii, accuracy, where="post", color="tab:blue", label="certified accuracy")
    by_threshold: dict[float, list[str]] = {}
    for name, threshold in sorted(thresholds.items()):
        if threshold > 0:
            by_threshold.setdefault(threshold, []).append(name)
    for threshold, names in by_threshold.items():
        ax.axvline(threshold, color=THRESHOLD, linestyle="--", linewidth=0.8)
        ax.annotate(", ".join(names), (threshold, 1.02), rotation=90, fontsize=7, ha="right", va="top",
                    color=THRESHOLD)
    ax.set(xlabel=RADIUS_AXIS, ylabel="certified accuracy", ylim=(0, 1.05), xlim=(0, radii[-1]))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def radius_timeline_plot(rows: Sequence[dict[str, Any]], path: Path) -> str:
    """Each frame's radius over time (or frame index), coloured by the gate's verdict, with the
    threshold its top label had to clear."""
    timed = all(r["time_s"] is not None for r in rows)
    xs = [r["time_s"] if timed else r["index"] for r in rows]
    fig, ax = figure()
    ax.step(xs, [r["threshold"] for r in rows], where="mid", color=THRESHOLD, linewidth=1, label="threshold")
    for certified, colour, label in ((True, CERTIFIED, "published"), (False, ABSTAINED, "abstained")):
        pts = [(x, r["radius"]) for x, r in zip(xs, rows) if r["certified"] is certified]
        if pts:
            ax.scatter(*zip(*pts), s=12, color=colour, label=label, zorder=3)
    ax.set(xlabel="time since start (s)" if timed else "frame", ylabel=RADIUS_AXIS.replace(" (", "\n("))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def samples_histogram_plot(rows: Sequence[dict[str, Any]], path: Path) -> str:
    """Histogram of the model evaluations each decision used (frames that never reached the model excluded)."""
    used = [r["n_used"] for r in rows if r["latency_ms"] is not None]
    fig, ax = figure()
    if used:
        ax.hist(used, bins=min(30, max(1, len(set(used)))), color="tab:blue")
    else:
        ax.text(0.5, 0.5, "no frame reached the model", ha="center", transform=ax.transAxes)
    ax.set(xlabel="samples per decision (selection + estimation)", ylabel="frames")
    return save_figure(fig, path)


def abstain_reasons_plot(reasons: dict[str, int], path: Path) -> str:
    """Bar chart of why frames were not published."""
    fig, ax = figure()
    if reasons:
        names, counts = zip(*Counter(reasons).most_common())
        ax.barh(names, counts, color=ABSTAINED)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no abstentions", ha="center", transform=ax.transAxes)
    ax.set(xlabel="frames", title="abstain reasons")
    return save_figure(fig, path)


def write_plots(rows: Sequence[dict[str, Any]], summary: dict[str, Any], out: Path) -> dict[str, str]:
    """Every plot of an evaluation into `out`; returns {file name: path}. The accuracy curve only with labels."""
    files = {"radius_timeline.png": radius_timeline_plot(rows, out / "radius_timeline.png"),
             "samples_histogram.png": samples_histogram_plot(rows, out / "samples_histogram.png"),
             "abstain_reasons.png": abstain_reasons_plot(summary["abstain_reasons"], out / "abstain_reasons.png")}
    curve = summary.get("certified_accuracy")
    if curve:
        files["certified_accuracy.png"] = certified_accuracy_plot(curve["radius"], curve["accuracy"],
                                                                  summary["thresholds"],
                                                                  out / "certified_accuracy.png")
    return files
