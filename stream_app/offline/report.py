"""PNG plots and a markdown summary of an offline evaluation (needs matplotlib)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream_app.core.learner import roc_auc
from stream_app.core.policy.uplift import Uplift, from_counts, wilson
from stream_app.errors import StreamAppError
from stream_app.offline import EvaluationRun
from stream_app.offline.known_answer import regret_curves


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


def interventions_per_day(
    timeline: list[tuple[float, str, str]],
) -> dict[str, dict[str, dict[int, int]]]:
    """Decisions per event-time day, by group (``treatment``: sent; ``holdout``: audit
    only) and action; suppressed decisions are left out."""
    out: dict[str, dict[str, dict[int, int]]] = {"treatment": {}, "holdout": {}}
    for ts, action, outcome in timeline:
        if outcome not in out:
            continue
        series = out[outcome].setdefault(action, {})
        day = int(ts // 86400)
        series[day] = series.get(day, 0) + 1
    return out


def uplift_over_time(flagged: list[tuple[float, str, int]]) -> list[tuple[int, Uplift]]:
    """The uplift estimate (with its interval) from the flagged examples resolved up to the
    end of each event-time day that resolved one: how the measurement firms up."""
    counts = [0, 0, 0, 0]  # holdout n, churned; treated n, churned
    out: list[tuple[int, Uplift]] = []
    for ts, group, label in sorted(flagged):
        if group not in ("holdout", "treatment"):
            continue
        i = 0 if group == "holdout" else 2
        counts[i] += 1
        counts[i + 1] += label
        day = int(ts // 86400)
        point = (day, from_counts(*counts))
        if out and out[-1][0] == day:
            out[-1] = point
        else:
            out.append(point)
    return out


def _day(day: int) -> datetime:
    return datetime.fromtimestamp(day * 86400, tz=UTC)


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
    # Offline: the scores as served in the replay (the prior, then each learned model),
    # not the live worker's /model figures, which cover only the learner's last labels.
    served = "scores served (prior, then the learned model)"
    for series, name in ((scores, served), (run.recency, "recency alone")):
        pts = rolling_auc(labels, series, window)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    learned = next((i for i, v in enumerate(run.versions) if v > 0), None)
    if learned is not None:
        ax.axvline(
            learned, color="grey", linestyle=":", label="first label the learned model scored"
        )
    ax.set_xlabel("labels resolved")
    ax.set_ylabel(f"ROC AUC (window {window})")
    ax.set_title("Rolling AUC, offline run of the file", fontsize=10)
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

    timeline = run.decisions.timeline
    if timeline:
        save(_interventions_figure(plt, timeline), "interventions.png")
    if run.flagged:
        save(_uplift_figure(plt, run.flagged), "uplift.png")
    if run.known_answer:
        save(_regret_figure(plt, regret_curves(run.known_answer)), "regret.png")

    summary = out_dir / "summary.md"
    s = run.summary
    summary.write_text(
        "# Offline evaluation\n\n"
        "Every figure here is from `stream-app evaluate` replaying the file offline (not a "
        "live worker's `/model`, which covers the learner's last labels only).\n\n"
        f"- events: {s['events']:,} ({s['users']:,} users), {s['invalid']} invalid, "
        f"{s['duplicates']} duplicates\n"
        f"- labels: {s['labels']:,} ({s['positives']:,} churned)\n"
        f"- AUC of the scores served, all labels: **{s['auc']}** (recency alone on the same "
        f"labels: {s['auc_recency']})\n"
        f"- AUC on labels scored by the learned model: {s['auc_learned']} "
        f"(recency only: {s['auc_recency_learned']}, {s['labels_learned']:,} labels)\n"
        f"- log loss: {s['logloss']}; drift alarms: {s['drifts']}\n"
        f"- top-decile lift: {lifts[0]:.2f}\n"
        f"- interventions: {s['interventions']:,} sent, {s['holdout_decisions']:,} held out; "
        f"uplift {s['uplift']['uplift']} [{s['uplift']['low']}, {s['uplift']['high']}] "
        f"({s['uplift']['treated_n']} treated / {s['uplift']['holdout_n']} holdout examples)\n"
        + _early_warning_line(s.get("early_warning"))
        + f"- speed: {s['events_per_second']:,} events/s; memory per user: "
        f"{s['memory_per_user_bytes']} bytes\n\n"
        + "".join(f"![{p.stem}]({p.name})\n" for p in written)
        + "\n```json\n"
        + json.dumps(s, indent=2)
        + "\n```\n",
        encoding="utf-8",
    )
    written.append(summary)
    return written


def _interventions_figure(plt: Any, timeline: list[tuple[float, str, str]]) -> Any:
    """Stacked bars per day by action, one panel per group, on the same scale."""
    per_group = interventions_per_day(timeline)
    actions = sorted({a for g in per_group.values() for a in g})
    days = [int(ts // 86400) for ts, _, outcome in timeline if outcome in per_group]
    first, last = (min(days), max(days)) if days else (0, 0)
    x = [_day(d) for d in range(first, last + 1)]
    fig, axes = plt.subplots(2, 1, figsize=(8.5, 4.8), sharex=True, sharey=True)
    colours = plt.get_cmap("tab10")
    for ax, group in zip(axes, ("treatment", "holdout"), strict=True):
        bottom = [0] * len(x)
        for i, action in enumerate(actions):
            per_day = per_group[group].get(action, {})
            heights = [per_day.get(d, 0) for d in range(first, last + 1)]
            ax.bar(x, heights, bottom=bottom, width=0.9, color=colours(i), label=action)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        total = sum(sum(s.values()) for s in per_group[group].values())
        what = "sent" if group == "treatment" else "held out, not sent"
        ax.set_title(f"{group}: {total:,} ({what})", fontsize=10)
        ax.set_ylabel("per day")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Interventions by action and group")
    fig.autofmt_xdate()
    return fig


def _uplift_figure(plt: Any, flagged: list[tuple[float, str, int]]) -> Any:
    """Left: churn rate of flagged holdout and treated users with 95% intervals. Right: the
    uplift and its interval as flagged examples resolve."""
    series = uplift_over_time(flagged)
    final = series[-1][1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6), width_ratios=(1, 2))
    for i, (k, n) in enumerate(
        ((final.holdout_churned, final.holdout_n), (final.treated_churned, final.treated_n))
    ):
        if not n:
            continue
        rate = k / n
        lo, hi = wilson(k, n)
        left.bar(i, rate, color=("grey", "tab:blue")[i])
        left.errorbar(i, rate, yerr=[[rate - lo], [hi - rate]], color="black", capsize=4)
        left.text(i, hi, f"{rate:.0%}\nn={n:,}", ha="center", va="bottom", fontsize=8)
    left.set_xticks([0, 1], ["holdout", "treated"])
    left.set_ylabel("churn rate of flagged users")
    left.set_ylim(0, 1.15)
    left.set_title("Flagged users' churn", fontsize=10)
    pts = [(d, u) for d, u in series if u.uplift is not None]
    if pts:
        x = [_day(d) for d, _ in pts]
        right.fill_between(
            x,
            [u.uplift_low for _, u in pts],
            [u.uplift_high for _, u in pts],
            alpha=0.25,
            label="95% interval",
        )
        right.plot(x, [u.uplift for _, u in pts], label="uplift")
        right.axhline(0.0, color="grey", linestyle="--")
        right.legend(fontsize=8)
    right.set_ylabel("holdout - treated churn rate")
    right.set_title("Uplift as flagged examples resolve", fontsize=10)
    right.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def _regret_figure(plt: Any, curves: dict[str, list[tuple[float, int]]]) -> Any:
    """Cumulative regret (churners the oracle saves and the chooser does not) over time."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, pts in sorted(curves.items(), key=lambda kv: -kv[1][-1][1] if kv[1] else 0):
        if not pts:
            continue
        main = name in ("rules", "bandit", "random")
        ax.plot(
            [datetime.fromtimestamp(t, tz=UTC) for t, _ in pts],
            [r for _, r in pts],
            label=f"{name} ({pts[-1][1]})",
            linewidth=2.0 if main else 0.9,
            linestyle="-" if main else ":",
        )
    ax.set_ylabel("cumulative regret (churners not saved)")
    ax.set_title("Regret against the oracle, on the run's treatment decisions", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.autofmt_xdate()
    return fig


def _early_warning_line(ew: dict[str, Any] | None) -> str:
    """The early-warning figures of a generated file (none for a file without a truth)."""
    if not ew:
        return ""
    return (
        f"- early warning: of {ew['churners']:,} churners, {ew['flagged_before_last_event']} "
        f"flagged before their last event, {ew['flagged_within_7d']} within 7 days after it, "
        f"{ew['flagged_within_14d']} within 14; precision {ew['precision']} against a base rate "
        f"of {ew['base_rate']}; {ew['interventions_per_user_month']} interventions per user-month\n"
    )
