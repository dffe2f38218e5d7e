"""Consumer lag per owned partition, from end, committed and beginning offsets."""

from __future__ import annotations

from stream_app.agents.lag import lag_by_partition


def test_lag_is_end_minus_committed_for_the_owned_partitions_only() -> None:
    end = {0: 100, 1: 50, 2: 70}
    committed = {0: 90, 1: 50, 2: 10}
    assert lag_by_partition({0, 1}, end, committed, {}) == {0: 10, 1: 0}


def test_a_partition_without_a_commit_lags_by_all_it_retains() -> None:
    assert lag_by_partition({3}, {3: 500}, {}, {3: 120}) == {3: 380}


def test_an_owned_partition_the_broker_did_not_answer_for_is_left_out() -> None:
    assert lag_by_partition({0, 9}, {0: 5}, {0: 5}, {0: 0}) == {0: 0}
