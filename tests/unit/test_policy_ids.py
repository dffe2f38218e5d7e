"""Holdout and ids are stable hashes: the same in every process, the share as configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stream_app.core.policy.ids import decision_id, holdout_draw, in_holdout, intervention_id

IDS = [f"user-{i}" for i in range(100_000)]


def test_the_holdout_share_is_within_one_point_of_the_setting() -> None:
    for share in (0.1, 0.25):
        held = sum(in_holdout(uid, share, "salt-a") for uid in IDS)
        assert abs(held / len(IDS) - share) < 0.01


def test_another_salt_draws_another_group_of_the_same_size() -> None:
    a = {uid for uid in IDS if in_holdout(uid, 0.1, "salt-a")}
    b = {uid for uid in IDS if in_holdout(uid, 0.1, "salt-b")}
    assert abs(len(a) - len(b)) < 0.01 * len(IDS)
    # Independent draws: the overlap is about 10% of a group, not all of it.
    assert len(a & b) < 0.2 * len(a)


def test_groups_and_ids_are_identical_in_another_process() -> None:
    sample = IDS[:2000]
    script = (
        "import json, sys\n"
        "from stream_app.core.policy.ids import decision_id, holdout_draw\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps([[holdout_draw(u, 's'), decision_id(u, 'event', 1.5e9, 'v1')]"
        " for u in ids]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different hash() salt, on purpose
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    theirs = json.loads(proc.stdout)
    ours = [[holdout_draw(u, "s"), decision_id(u, "event", 1.5e9, "v1")] for u in sample]
    assert theirs == ours


def test_ids_depend_on_user_trigger_time_and_version_only() -> None:
    base = decision_id("u1", "event", 1.5e9, "abc")
    assert base == decision_id("u1", "event", 1.5e9 + 1e-7, "abc")  # same millisecond
    others = {
        decision_id("u2", "event", 1.5e9, "abc"),
        decision_id("u1", "silence", 1.5e9, "abc"),
        decision_id("u1", "event", 1.5e9 + 1, "abc"),
        decision_id("u1", "event", 1.5e9, "abd"),
        intervention_id("u1", "event", 1.5e9, "abc"),
    }
    assert base not in others and len(others) == 5
