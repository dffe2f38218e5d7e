"""Generated treatment effect: the file without it is unchanged, untreated users keep their
churn path, treated savable users get the future where they come back."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.events import EVENT_ADAPTER
from stream_app.cli import main
from stream_app.offline.generate import CHURN_TAG, Generator, savable_draw
from stream_app.offline.treatment import CHURN, SAVED, TAG, TreatmentSimulator, path_of

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86400.0
# sha256 of the file and of its truth file, taken from the generator as it was before the
# treatment option existed (commit 59511eb): (users, days, seed, malformed, duplicates).
BEFORE = {
    (60, 40, 11, 0.02, 0.02): (
        "8cf93b3b61332fac4eae46b50d66bc49907afa9cb4ed5edc06326e069f8df55e",
        "78f560e2112620d903a281c20cc7f5a0f8513a9970c884099cfd39a1712ac341",
    ),
    (200, 90, 5, 0.0, 0.0): (
        "c225ed9ad14ebc2788558d02faad7d6f6e251de258c9ab85253c10aeea3ab959",
        "e4884ecd766924f248de4bc26341565d70acbbc8bd26cd7633b8f8c655192a02",
    ),
}


def generate(users: int, days: int, seed: int, q: float = 0.0, **kw: Any) -> tuple[Generator, str]:
    gen = Generator(users, days, seed, START, treatment_effect=q, **kw)
    buf = io.StringIO()
    gen.run(buf)
    return gen, buf.getvalue()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("args", sorted(BEFORE))
def test_without_a_treatment_effect_the_files_are_byte_identical_to_before(
    args: tuple[int, int, int, float, float], tmp_path: Path
) -> None:
    users, days, seed, malformed, duplicates = args
    out = tmp_path / "g.jsonl"
    argv = ["generate", "--users", str(users), "--days", str(days), "--seed", str(seed)]
    argv += ["--malformed", str(malformed), "--duplicates", str(duplicates)]
    assert main([*argv, "--out", str(out), "--treatment-effect", "0"]) == 0
    truth = out.with_name(out.name + ".truth.jsonl")
    assert (sha(out.read_text()), sha(truth.read_text())) == BEFORE[args]


def test_untreated_users_keep_exactly_the_file_without_the_option() -> None:
    _, plain = generate(300, 60, 3, duplicates=0.02)
    gen, tagged = generate(300, 60, 3, q=0.5, duplicates=0.02)
    assert len(gen.savable) > 20 and tagged != plain
    kept = []
    for line in tagged.splitlines():
        if TreatmentSimulator.keep(EVENT_ADAPTER.validate_json(line), treated_at=None):
            kept.append(line.replace(CHURN_TAG, ""))
    assert kept == plain.splitlines()


def test_about_q_of_the_churners_are_savable_and_only_churners() -> None:
    gen = Generator(4000, 1, 9, START, treatment_effect=0.3)
    churners = [u for u in gen.users if u.churner]
    share = len(gen.savable) / len(churners)
    se = (0.3 * 0.7 / len(churners)) ** 0.5
    assert abs(share - 0.3) < 4 * se
    assert gen.savable <= {u.uid for u in churners}
    assert gen.savable == {u.uid for u in churners if savable_draw(9, u.uid) < 0.3}


def test_both_paths_are_valid_events_tagged_from_the_churn_onset_with_unique_ids() -> None:
    gen, text = generate(300, 90, 4, q=1.0)
    onset = {u.uid: START.timestamp() + u.onset * DAY for u in gen.users if u.churner}
    ids, paths = set(), {CHURN: 0, SAVED: 0}
    for line in text.splitlines():
        event = EVENT_ADAPTER.validate_json(line)  # the contract holds for both paths
        ids.add(event.event_id)
        path = path_of(event)
        if path is not None:
            paths[path] += 1
            assert event.user_id in gen.savable
            assert event.ts.timestamp() >= onset[event.user_id] - DAY  # from the onset day
    assert len(ids) == len(text.splitlines())
    assert paths[CHURN] > 0 and paths[SAVED] > paths[CHURN]  # the saved keep coming
    truth = gen.truth()
    assert {r["user_id"] for r in truth if r["saved_if_treated"]} == gen.savable


def sessions_after(events: list[Any], start: float, days: float) -> int:
    return sum(
        1
        for e in events
        if e.event_type == "session_start" and start < e.ts.timestamp() <= start + days * DAY
    )


def test_a_treated_savable_churner_comes_back_and_an_untreated_one_does_not() -> None:
    gen, text = generate(400, 120, 6, q=1.0)
    by_user: dict[str, list[Any]] = {}
    for line in text.splitlines():
        e = EVENT_ADAPTER.validate_json(line)
        by_user.setdefault(e.user_id, []).append(e)
    end = START.timestamp() + 120 * DAY
    back_treated = back_untreated = n = 0
    for u in gen.users:
        treated_at = START.timestamp() + (u.onset + 14) * DAY  # two weeks into leaving
        if u.uid not in gen.savable or treated_at + 30 * DAY > end:
            continue
        events = by_user.get(u.uid, [])
        treated = [e for e in events if TreatmentSimulator.keep(e, treated_at)]
        untreated = [e for e in events if TreatmentSimulator.keep(e, None)]
        n += 1
        back_treated += sessions_after(treated, treated_at, 30) > 0
        back_untreated += sessions_after(untreated, treated_at, 30) > 0
    assert n > 30
    assert back_treated / n > 0.95  # the weekly floor: ~1.4% expected to miss
    assert back_untreated / n < 0.5


def event(path: str | None, day: float, user: str = "u1") -> Any:
    data: dict[str, Any] = {
        "event_id": f"e{day}",
        "user_id": user,
        "event_type": "page_view",
        "ts": (START + timedelta(days=day)).isoformat(),
    }
    if path is not None:
        data["properties"] = {TAG: path, "other": 1}
    return EVENT_ADAPTER.validate_json(json.dumps(data))


def test_keep_switches_paths_at_the_first_treatment() -> None:
    t = (START + timedelta(days=10)).timestamp()
    keep = TreatmentSimulator.keep
    assert keep(event(None, 5), None) and keep(event(None, 15), t)
    assert keep(event(CHURN, 9), None) and keep(event(CHURN, 15), None)
    assert not keep(event(SAVED, 15), None)
    assert keep(event(CHURN, 9), t) and keep(event(CHURN, 10), t)
    assert not keep(event(CHURN, 10.5), t)
    assert not keep(event(SAVED, 10), t) and keep(event(SAVED, 10.5), t)
    assert keep(event("something else", 20), t)  # not ours: never dropped


def test_the_simulator_remembers_each_users_first_treatment() -> None:
    sim = TreatmentSimulator()
    sim.treated("u1", (START + timedelta(days=10)).timestamp())
    sim.treated("u1", (START + timedelta(days=20)).timestamp())  # a later one changes nothing
    assert sim.keep_event(event(SAVED, 15)) and not sim.keep_event(event(CHURN, 15))
    assert sim.keep_event(event(CHURN, 15, user="u2"))  # never treated


def test_the_cli_refuses_an_effect_outside_zero_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.jsonl"
    assert main(["generate", "--out", str(out), "--treatment-effect", "1.5"]) == 2
    assert "--treatment-effect" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--users",
                "20",
                "--days",
                "5",
                "--out",
                str(out),
                "--treatment-effect",
                "0.5",
            ]
        )
        == 0
    )
    assert "saved_path_lines" in json.loads(capsys.readouterr().out)
