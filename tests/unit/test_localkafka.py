"""The local Kafka harness: a cluster id the storage tool never mistakes for an option."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import _localkafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    lk = _localkafka()
    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))  # URL-safe base64 of 0xf8.. starts with '-'
    plain = uuid.UUID(bytes=b"\x10" + bytes(15))
    draws = iter([dash, dash, plain])
    monkeypatch.setattr(lk.uuid, "uuid4", lambda: next(draws))
    cluster_id = lk.new_cluster_id()
    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA" and len(cluster_id) == 22
    monkeypatch.undo()
    assert not any(lk.new_cluster_id().startswith("-") for _ in range(2000))
