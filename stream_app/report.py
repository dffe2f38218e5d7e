"""PNG plots and a markdown summary of an offline evaluation (needs matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stream_app.core.learner import roc_auc
from stream_app.errors import StreamAppError
from stream_app.offline import EvaluationRun


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise StreamAppError(
            "--report-dir needs matplotlib: pip install 'churn-stream[report]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rolling_auc(labels: list[int], scores: list[float], window: int) -> list[tuple[int, float]]:
    """Exact AUC over consecutive windows of resolved labels (points where both classes
    occur)."""
    out = []
    for start in range(0, max(0, len(labels) - window + 1), max(1, window // 4)):
        auc = roc_auc(labels[start : start + window], scores[start : start + window])
        if auc == auc:  # not NaN
            out.append((start + window, auc))
    return out


def calibration(
    labels: list[int], scores: list[float], bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, count) per equal-width bin of p."""
    sums = [[0.0, 0.0, 0] for _ in range(bins)]
    for y, p in zip(labels, scores, strict=True):
        b = min(bins - 1, int(p * bins))
        sums[b][0] += p
        sums[b][1] += y
        sums[b][2] += 1
    return [(s[0] / s[2], s[1] / s[2], int(s[2])) for s in sums if s[2]]


def lift(labels: list[int], scores: list[float], buckets: int = 10) -> list[float]:
    """Churn rate per score decile (highest first) divided by the overall rate."""
    n = len(labels)
    base = sum(labels) / n if n else 0.0
    order = sorted(range(n), key=lambda i: -scores[i])
    out = []
    for b in range(buckets):
        idx = order[b * n // buckets : (b + 1) * n // buckets]
        rate = sum(labels[i] for i in idx) / len(idx) if idx else 0.0
        out.append(rate / base if base else 0.0)
    return out


def write_report(run: EvaluationRun, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, scores = run.labels, run.scores
    written: list[Path] = []
    if not labels:
        raise StreamAppError(
            "no labels were resolved: nothing to plot (file too short for the horizon and warm-up?)"
        )

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    window = max(200, len(labels) // 20)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for series, name in ((scores, "model (prequential)"), (run.recency, "recency only")):
        pts = rolling_auc(labels, series, window)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("labels resolved")
    ax.set_ylabel(f"ROC AUC (window {window})")
    ax.set_title("Rolling AUC")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "rolling_auc.png")

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    cal = calibration(labels, scores)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot([c[0] for c in cal], [c[1] for c in cal], "o-", label="model")
    ax.set_xlabel("predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title("Calibration")
    ax.legend()
    save(fig, "calibration.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for cls, name in ((0, "retained (0)"), (1, "churned (1)")):
        ax.hist(
            [s for s, y in zip(scores, labels, strict=True) if y == cls],
            bins=40,
            alpha=0.6,
            density=True,
            label=name,
        )
    ax.set_xlabel("p at scoring time")
    ax.set_title("Score distribution by outcome")
    ax.legend()
    save(fig, "score_distribution.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    lifts = lift(labels, scores)
    ax.bar(range(1, len(lifts) + 1), lifts)
    ax.axhline(1.0, color="grey", linestyle="--")
    ax.set_xlabel("score decile (1 = highest risk)")
    ax.set_ylabel("lift")
    ax.set_title("Lift by decile")
    save(fig, "lift.png")

    summary = out_dir / "summary.md"
    s = run.summary
    summary.write_text(
        "# Offline evaluation\n\n"
        f"- events: {s['events']:,} ({s['users']:,} users), {s['invalid']} invalid, "
        f"{s['duplicates']} duplicates\n"
        f"- labels: {s['labels']:,} ({s['positives']:,} churned)\n"
        f"- AUC: **{s['auc']}** (recency only on the same labels: {s['auc_recency']})\n"
        f"- AUC on labels scored by the learned model: {s['auc_learned']} "
        f"(recency only: {s['auc_recency_learned']}, {s['labels_learned']:,} labels)\n"
        f"- log loss: {s['logloss']}; drift alarms: {s['drifts']}\n"
        f"- top-decile lift: {lifts[0]:.2f}\n"
        f"- speed: {s['events_per_second']:,} events/s; memory per user: "
        f"{s['memory_per_user_bytes']} bytes\n\n"
        + "".join(f"![{p.stem}]({p.name})\n" for p in written)
        + "\n```json\n"
        + json.dumps(s, indent=2)
        + "\n```\n",
        encoding="utf-8",
    )
    written.append(summary)
    return written
