"""The evaluation report: what each plot is computed from, and which PNGs a run writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.cli import main
from stream_app.core.policy.uplift import from_counts
from stream_app.offline.report import interventions_per_day, rolling_auc, uplift_over_time

DAY = 86400.0
ROOT = Path(__file__).resolve().parents[2]


def test_interventions_are_counted_per_day_by_group_and_action() -> None:
    timeline = [
        (0.5 * DAY, "coupon", "treatment"),
        (0.7 * DAY, "coupon", "treatment"),
        (0.9 * DAY, "win_back", "holdout"),
        (1.2 * DAY, "coupon", "treatment"),
        (1.3 * DAY, "coupon", "suppressed"),  # a limit held it back: not an intervention
        (1.4 * DAY, "win_back", "treatment"),
    ]
    assert interventions_per_day(timeline) == {
        "treatment": {"coupon": {0: 2, 1: 1}, "win_back": {1: 1}},
        "holdout": {"win_back": {0: 1}},
    }


def test_uplift_over_time_ends_at_the_estimate_from_all_flagged_examples() -> None:
    flagged = [
        (2.5 * DAY, "holdout", 1),
        (0.5 * DAY, "treatment", 0),  # out of order: sorted by resolution time
        (0.6 * DAY, "holdout", 1),
        (2.1 * DAY, "treatment", 1),
        (2.2 * DAY, "treatment", 0),
    ]
    series = uplift_over_time(flagged)
    assert [day for day, _ in series] == [0, 2]  # one point per day that resolved one
    first, last = series[0][1], series[-1][1]
    assert (first.holdout_n, first.treated_n, first.uplift) == (1, 1, 1.0)
    assert last == from_counts(2, 2, 3, 1)
    assert last.uplift == pytest.approx(1 - 1 / 3)
    assert last.uplift_low is not None and last.uplift_low < last.uplift < 1.0


def test_rolling_auc_windows_skip_windows_with_one_class() -> None:
    labels = [0, 0, 0, 0, 1, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.9, 0.5, 0.8, 0.7]
    points = rolling_auc(labels, scores, window=4)
    # windows start every window // 4 = 1 label; the first (all zeros) has no AUC
    assert points[0][0] == 5 and all(auc == 1.0 for _, auc in points)


def test_the_report_shows_interventions_and_uplift(tmp_path: Path) -> None:
    events = tmp_path / "t.jsonl"
    args = ["generate", "--users", "400", "--days", "50", "--seed", "3"]
    assert main([*args, "--treatment-effect", "0.5", "--out", str(events)]) == 0
    report = tmp_path / "report"
    rc = main(
        ["evaluate", str(events), "--quiet", "--horizon", "14d", "--warmup", "7d"]
        + ["--report-dir", str(report)]
    )
    assert rc == 0
    for name in (
        "rolling_auc.png",
        "calibration.png",
        "score_distribution.png",
        "lift.png",
        "interventions.png",
        "uplift.png",
    ):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = (report / "summary.md").read_text()
    assert "![uplift](uplift.png)" in summary and "![interventions](interventions.png)" in summary
    # A generated file has a truth next to it: the report says how early churners were flagged.
    assert "- early warning: of " in summary and "churners" in summary


def test_the_demo_makes_the_readme_figures_without_kafka(tmp_path: Path) -> None:
    """`make docs-img` = tools/demo.py --report-only: the demo's file and settings, offline."""
    out = tmp_path / "docs-img"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_APP_", "KAFKA_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/demo.py"), "--report-only"]
        + ["--users", "300", "--days", "60", "--dir", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Kafka" not in proc.stdout and not (out / "kafka").exists()
    assert "uplift" in proc.stdout and "AUC" in proc.stdout
    for name in ("rolling_auc", "calibration", "interventions", "uplift"):
        assert (out / "report" / f"{name}.png").stat().st_size > 0
