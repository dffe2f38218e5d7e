"""The offline driver, the generator and the command line."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.outputs import Reason
from stream_app.cli import COMMANDS, main
from stream_app.offline import EvaluateOptions, evaluate, validate_file
from stream_app.offline.advice import no_labels_advice
from stream_app.offline.early_warning import truth_file
from stream_app.offline.evaluate import parse_time
from stream_app.offline.generate import Generator
from stream_app.settings import load_settings

START = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "t.jsonl"
    assert (
        main(["generate", "--users", "150", "--days", "75", "--seed", "5", "--out", str(out)]) == 0
    )
    return out


def test_generator_is_deterministic_and_writes_ground_truth(tmp_path: Path) -> None:
    paths = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        path = tmp_path / f"{name}.jsonl"
        main(["generate", "--users", "30", "--days", "10", "--seed", str(seed), "--out", str(path)])
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()
    truth = [json.loads(x) for x in Path(str(paths[0]) + ".truth.jsonl").read_text().splitlines()]
    assert len(truth) == 30 and {"user_id", "churner", "churn_onset"} <= set(truth[0])


def test_generated_traffic_has_funnels_and_is_time_ordered(traffic: Path) -> None:
    rows = [json.loads(x) for x in traffic.read_text().splitlines()]
    types = {r["event_type"] for r in rows}
    assert {"session_start", "product_view", "add_to_cart", "checkout_start", "purchase"} <= types
    times = [parse_time(r["ts"]) for r in rows]
    assert times == sorted(times)


def test_validate_reports_each_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mixed.jsonl"
    good = (
        '{"event_id":"e1","user_id":"u1","event_type":"purchase",'
        '"ts":"2026-01-05T12:00:00Z","revenue":42.0}'
    )
    path.write_text(
        "\n".join([good, "{oops", good.replace(',"revenue":42.0', ""), "", good.replace("Z", "")])
        + "\n"
    )
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "valid": 1,
        "invalid": 3,
        "reasons": {"invalid_json": 1, "missing_field": 1, "naive_timestamp": 1},
    }
    lines = err.strip().splitlines()
    assert [ln.split(":")[1] for ln in lines] == ["2", "3", "5"]
    assert "field=revenue" in lines[1]


def test_commands_report_a_ten_thousand_deep_line_instead_of_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = (
        '{"event_id":"e1","user_id":"u1","event_type":"purchase",'
        '"ts":"2026-01-05T12:00:00Z","revenue":42.0}'
    )
    path = tmp_path / "deep.jsonl"
    path.write_text(good + "\n" + '{"a":' * 10_000 + "1" + "}" * 10_000 + "\n")
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["reasons"] == {"too_deep": 1}
    assert err.startswith(f"{path}:2: too_deep")
    assert main(["evaluate", str(path), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["invalid_reasons"] == {"too_deep": 1} and summary["events"] == 1


def test_validate_all_good_exits_zero(traffic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(traffic)]) == 0
    assert json.loads(capsys.readouterr().out)["invalid"] == 0


def test_missing_file_is_a_clear_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/nonexistent.jsonl"]) == 2
    assert "cannot read /nonexistent.jsonl" in capsys.readouterr().err


def test_evaluate_summary_and_outputs(
    traffic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds, scores = tmp_path / "p.jsonl", tmp_path / "s.jsonl"
    rc = main(
        [
            "evaluate",
            str(traffic),
            "--quiet",
            "--horizon",
            "14d",
            "--warmup",
            "7d",
            "--predictions-out",
            str(preds),
            "--scores-at",
            "2026-02-15T00:00:00Z",
            "--scores-out",
            str(scores),
            "--report-dir",
            str(tmp_path / "rep"),
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("events", "users", "labels", "positives", "auc", "logloss", "events_per_second"):
        assert key in summary
    assert summary["labels"] > 100 and 0 < summary["positives"] < summary["labels"]
    assert 0.5 < summary["auc"] <= 1.0
    pred_rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(pred_rows) == summary["labels"]
    assert set(pred_rows[0]) == {"user_id", "ts", "p", "label"}
    cutoff = parse_time("2026-02-15T00:00:00Z")
    seen = {
        json.loads(x)["user_id"]
        for x in traffic.read_text().splitlines()
        if parse_time(json.loads(x)["ts"]) < cutoff
    }
    score_rows = [json.loads(x) for x in scores.read_text().splitlines()]
    assert {r["user_id"] for r in score_rows} == seen
    assert all(0.0 <= r["p"] <= 1.0 for r in score_rows)
    # Reason codes in the export have the shape they have on Kafka (schemas/outputs.py).
    shown = [reason for r in score_rows for reason in r["reasons"]]
    assert shown and all(set(x) == set(Reason.model_fields) and x["value"] > 0 for x in shown)
    for name in (
        "rolling_auc.png",
        "calibration.png",
        "score_distribution.png",
        "lift.png",
        "summary.md",
    ):
        assert (tmp_path / "rep" / name).stat().st_size > 0


def test_scores_at_uses_no_event_after_the_cutoff(traffic: Path, tmp_path: Path) -> None:
    """The audience export at T equals the export of a file truncated at T."""
    cutoff = "2026-02-01T00:00:00Z"
    t = parse_time(cutoff)
    truncated = tmp_path / "trunc.jsonl"
    truncated.write_text(
        "".join(
            x + "\n"
            for x in traffic.read_text().splitlines()
            if parse_time(json.loads(x)["ts"]) < t
        )
    )
    settings = load_settings(min_labels_ready=10**9)
    outs = []
    for src in (traffic, truncated):
        out = tmp_path / f"scores-{src.stem}.jsonl"
        evaluate(src, settings, EvaluateOptions(scores_at=t, scores_out=out))
        outs.append(out.read_text())
    assert outs[0] == outs[1] and outs[0]


def test_any_file_order_gives_the_same_result(traffic: Path, tmp_path: Path) -> None:
    lines = traffic.read_text().splitlines()
    random.Random(3).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    # The generator's truth goes with its events (early warning reads it from next to them).
    truth_file(shuffled).write_text(truth_file(traffic).read_text())
    settings = load_settings(horizon=14 * 86400, eval_warmup=7 * 86400)
    runs = [evaluate(p, settings, EvaluateOptions()) for p in (traffic, shuffled)]
    a, b = (dict(r.summary) for r in runs)
    assert a.pop("sorted_input") and not b.pop("sorted_input")
    for key in ("events_per_second", "seconds"):
        a.pop(key), b.pop(key)
    assert a == b
    assert a["early_warning"]["churners"] > 0


def test_malformed_and_duplicate_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "dirty.jsonl"
    gen = Generator(40, 20, 9, parse_time_dt(START), malformed=0.05, duplicates=0.05)
    with path.open("w") as fh:
        stats = gen.run(fh)
    run = evaluate(path, load_settings(), EvaluateOptions())
    checked = validate_file(path, io.StringIO())
    assert stats["malformed"] > 0 and stats["duplicates"] > 0
    # a duplicated malformed line is invalid twice; a duplicated good line is a duplicate
    assert run.summary["invalid"] == checked["invalid"] >= stats["malformed"]
    assert run.summary["invalid_reasons"] == checked["reasons"]
    assert 0 < run.summary["duplicates"] <= stats["duplicates"]
    assert run.summary["events"] + run.summary["duplicates"] == checked["valid"]


def parse_time_dt(text: str):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(parse_time(text), tz=UTC)


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for cmd in COMMANDS:
        assert cmd in out


def test_committed_json_schemas_are_current() -> None:
    from schemas.export import COMMITTED_DIR, render, schemas

    docs = schemas()
    committed = {p.name for p in COMMITTED_DIR.glob("*.json")}
    assert committed == set(docs), "run `make schema` and commit schemas/json"
    for name, doc in docs.items():
        assert (COMMITTED_DIR / name).read_text() == render(doc), f"{name} is stale: make schema"


def test_event_schema_matches_the_contract() -> None:
    from schemas.export import schemas

    doc = json.dumps(schemas()["event.v1.schema.json"])
    for field in ("event_id", "user_id", "event_type", "ts", "revenue", "rating", "properties"):
        assert f'"{field}"' in doc


def test_an_evaluation_that_judges_nothing_says_why_and_what_would_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """30 days of traffic against the default 30-day warm-up and 30-day horizon: no label
    can resolve inside the file. The command says so, and its suggestion works."""
    events = tmp_path / "month.jsonl"
    assert main(["generate", "--users", "200", "--days", "30", "--out", str(events)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(events), "--quiet"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["labels"] == 0 and summary["auc"] is None
    assert 29 < summary["span_days"] <= 30
    assert "spans 29.9 days" in err and "warm-up (30d)" in err and "horizon (30d)" in err
    suggested = err.split("Try ", 1)[1].split(" (", 1)[0].split()
    assert main(["evaluate", str(events), "--quiet", *suggested]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["labels"] > 100 and "no labels" not in err


@pytest.mark.parametrize(
    ("span_days", "warmup_days", "horizon_days", "expect"),
    [
        (60, 30, 14, None),  # fits: nothing to say
        (30, 30, 7, "Try --warmup 8d"),  # keep the horizon, shorten the warm-up
        (30, 30, 30, "Try --horizon 10d --warmup 10d"),
        (2, 30, 30, "cannot be judged"),
        (None, 30, 30, "no valid event"),
    ],
)
def test_no_labels_advice(
    span_days: float | None, warmup_days: float, horizon_days: float, expect: str | None
) -> None:
    day = 86400.0
    span = None if span_days is None else span_days * day
    text = no_labels_advice(span, warmup_days * day, horizon_days * day)
    assert (text is None) if expect is None else (text is not None and expect in text)
