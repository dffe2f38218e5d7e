"""policy-replay: the bandit evaluated offline on a logged randomised experiment, checked on
a generated log whose best arm per segment is known."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from stream_app.cli import main
from stream_app.errors import InputFileError
from stream_app.offline.policy_replay import evaluate, read_log

# Segment x: arm a keeps 60%, the others 20%; segment y: arm c. Best fixed arm: 40%.
TRUTH = {"x": {"a": 0.6, "b": 0.2, "c": 0.2}, "y": {"a": 0.2, "b": 0.2, "c": 0.6}}


def write_log(path: Path, n: int = 6000, seed: int = 11) -> Path:
    """Arms logged uniformly at random, as the replay method assumes."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "noise", "arm", "stayed"])
        for i in range(n):
            kind = "xy"[i % 2]
            arm = rng.choice("abc")
            w.writerow([kind, rng.randint(0, 9), arm, int(rng.random() < TRUTH[kind][arm])])
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["policy-replay", *args])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1]) if out else {}


def test_it_finds_the_best_arm_of_each_segment_and_beats_every_fixed_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "log.csv")
    code, out = run_cli(
        capsys, str(log), "--arm", "arm", "--reward", "stayed", "--context", "kind", "--runs", "5"
    )
    assert code == 0
    assert out["rows"] == 6000
    assert 1700 < out["matched"] < 2300  # about a third of the rows match
    segments = out["segments"]
    assert isinstance(segments, dict)
    assert segments["kind=x"]["choice"] == "a" and segments["kind=y"]["choice"] == "c"
    assert segments["kind=x"]["runs"] == {"a": 5}
    arms = out["arms"]
    assert isinstance(arms, dict) and set(arms) == {"a", "b", "c"}
    assert out["best_rate"] == pytest.approx(0.4, abs=0.03)
    assert out["random_rate"] == pytest.approx(1 / 3, abs=0.03)
    # The contextual optimum is 0.6; learning costs a little of it.
    lo, hi = out["policy_rate_interval"]  # type: ignore[misc]
    assert 0.5 < lo <= out["policy_rate"] <= hi < 0.62  # type: ignore[operator]


def test_without_context_it_matches_the_best_fixed_arm(tmp_path: Path) -> None:
    # Segment blind, a and c tie at 0.4: the policy can do no better than a fixed arm.
    out = evaluate(read_log(write_log(tmp_path / "log.csv"), "arm", "stayed", []), runs=3)
    assert out["segments"]["all"]["choice"] in ("a", "c")
    assert out["policy_rate"] == pytest.approx(0.4, abs=0.03)


def test_the_same_seed_gives_the_same_figures(tmp_path: Path) -> None:
    log = read_log(write_log(tmp_path / "log.csv", n=900), "arm", "stayed", ["kind"])
    assert evaluate(log, seed=3, runs=2) == evaluate(log, seed=3, runs=2)
    assert evaluate(log, seed=3, runs=2) != evaluate(log, seed=4, runs=2)


def test_bad_rows_are_skipped_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log.csv"
    path.write_text("arm,stayed\na,1\nb,0\n,1\na,2.5\nb,yes\na,0\n")
    code, out = run_cli(capsys, str(path), "--arm", "arm", "--reward", "stayed", "--runs", "1")
    assert code == 0 and out["rows"] == 3 and out["skipped"] == 3


def test_a_missing_column_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "log.csv", n=10)
    assert main(["policy-replay", str(log), "--arm", "treatment", "--reward", "stayed"]) == 2
    err = capsys.readouterr().err
    assert "no column treatment" in err and "columns: kind, noise, arm, stayed" in err
    with pytest.raises(InputFileError, match="cannot read"):
        read_log(tmp_path / "absent.csv", "arm", "stayed", [])
