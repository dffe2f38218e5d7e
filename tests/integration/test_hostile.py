"""Hostile input at a live worker: hand-written and property-based payloads (a seeded,
deterministic hypothesis corpus) sent in one run. Every payload carries the reason it must
get, written down from the event contract (docs/events.md) and not asked of the decoder:
the hand-written ones name the real problem, and each generated one is built to break one
rule (bytes made invalid UTF-8, text made invalid JSON, JSON that is no object, a required
field removed, one field set to a value its rule forbids). Each lands in the DLQ with that
reason, the decoder agrees offline, the dead-letter count equals the worker's counter,
the agent never restarts, and a valid event after all of them is still applied. Then
`validate`, `evaluate` and `replay` read the same payloads from a file and report lines,
never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from stream_app.ingest import Decoder
from tests.integration.conftest import Worker, consume_all, wait_for

MAX = 65536  # STREAM_APP_MAX_MESSAGE_BYTES default
NOW = datetime.now(tz=UTC).replace(microsecond=0)


def ts(minutes_ago: float = 5) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def event(user: str, **kw: object) -> dict[str, object]:
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "event_type": "page_view",
        "ts": ts(),
        **kw,
    }


def enc(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def padded_to(size: int) -> bytes:
    """An event of exactly ``size`` bytes (padding in a property)."""
    base = enc(event("edge", properties={"pad": ""}))
    return base.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(base)) + b'"')


DEEP = 10_000
HAND_WRITTEN: list[tuple[str, bytes | None, str]] = [
    ("random bytes", bytes(range(256)) * 3, "invalid_utf8"),
    ("invalid utf-8", b'{"user_id":"\xc3\x28"}', "invalid_utf8"),
    ("just over the size limit", padded_to(MAX + 1), "too_large"),
    # At the limit the size is fine and the real problem is named: a property value over
    # 256 characters (no valid event can be that large).
    ("exactly at the size limit", padded_to(MAX), "invalid_field"),
    ("10,000-deep array", b"[" * DEEP + b"]" * DEEP, "too_deep"),
    ("10,000-deep object", b'{"a":' * DEEP + b"1" + b"}" * DEEP, "too_deep"),
    (
        "10,000-deep properties",
        enc(event("deep"))[:-1] + b',"properties":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
        "too_deep",
    ),
    (
        "huge number",
        enc(event("n", event_type="purchase"))[:-1] + b',"revenue":1e400}',
        "invalid_field",
    ),
    ("huge string", enc(event("u" * 100_00)), "invalid_field"),
    ("NaN", enc(event("nan", event_type="purchase", revenue=float("nan"))), "invalid_field"),
    ("Infinity", enc(event("inf", event_type="purchase", revenue=float("inf"))), "invalid_field"),
    ("wrong type", enc(event("t", quantity="two")), "invalid_field"),
    ("naive timestamp", enc(event("naive", ts="2026-01-05T12:00:00")), "naive_timestamp"),
    ("far-future timestamp", enc(event("future", ts="2999-01-01T00:00:00Z")), "future_timestamp"),
    ("null value (tombstone)", None, "tombstone"),
    ("empty value", b"", "invalid_json"),
    ("unknown event type", enc(event("x", event_type="teleport")), "unknown_event_type"),
    ("not an object", b"[1, 2, 3]", "not_an_object"),
    ("JSON null", b"null", "not_an_object"),
]


EVENT_TYPES = frozenset(
    {
        "session_start",
        "page_view",
        "product_view",
        "search",
        "add_to_cart",
        "remove_from_cart",
        "checkout_start",
        "purchase",
        "review",
        "support_contact",
        "return",
    }
)
INTS = st.integers(-(2**53), 2**53)
NOT_A_STRING = INTS | st.booleans() | st.none() | st.lists(INTS, max_size=2)


def _with(name: str, values: st.SearchStrategy[Any], reason: str, **base: Any) -> Any:
    """Payloads that set ``name`` of an otherwise valid event to each of ``values``."""
    return st.builds(lambda v: (enc({**event("prop", **base), name: v}), reason), values)


def _without(name: str) -> tuple[bytes, str]:
    e = event("gone")
    e.pop(name)
    return enc(e), "missing_field"


def corpus() -> list[tuple[bytes, str]]:
    """300 property-based payloads with the reason each must get (the same on every run:
    derandomized). Each strategy breaks exactly one rule of the contract."""
    leaf = INTS | st.text(max_size=5) | st.booleans() | st.none()
    negative = st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False)
    cases = st.one_of(
        st.binary(max_size=200).map(lambda b: (b + b"\xff", "invalid_utf8")),  # 0xFF: never
        st.text(max_size=60).map(lambda t: (("{'" + t).encode(), "invalid_json")),
        st.recursive(leaf, lambda c: st.lists(c, max_size=4), max_leaves=20).map(
            lambda x: (enc(x), "not_an_object")
        ),
        st.sampled_from(["event_id", "user_id", "event_type", "ts"]).map(_without),
        _with("v", INTS.filter(lambda v: v != 1), "unsupported_version"),
        _with(
            "event_type",
            st.text(max_size=20).filter(lambda t: t not in EVENT_TYPES),
            "unknown_event_type",
        ),
        _with(
            "event_id",
            st.just("") | st.text(min_size=129, max_size=200) | NOT_A_STRING,
            "invalid_field",
        ),
        _with(
            "user_id",
            st.just("")
            | st.text(min_size=129, max_size=200)
            | NOT_A_STRING
            | st.text(max_size=5).map(lambda t: t + "\x01"),  # a control character
            "invalid_field",
        ),
        _with("ts", st.text(max_size=30).map(lambda t: "x" + t) | NOT_A_STRING, "invalid_field"),
        _with(
            "quantity",
            st.integers(10_001, 2**53)
            | st.integers(-(2**53), 0)
            | st.text(max_size=5)
            | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
            "invalid_field",
        ),
        _with("price", negative | st.text(max_size=5), "invalid_field"),
        _with("category", st.text(min_size=65, max_size=100), "invalid_field"),
        _with(
            "properties", st.lists(INTS, max_size=3) | INTS | st.text(max_size=5), "invalid_field"
        ),
        _with(
            "properties",
            st.dictionaries(st.text(max_size=10), st.booleans(), min_size=33, max_size=40),
            "invalid_field",
        ),
        _with(
            "properties",
            st.text(min_size=257, max_size=300).map(lambda t: {"k": t}),
            "invalid_field",
        ),
        _with(
            "rating",
            st.integers(6, 2**53) | st.integers(-(2**53), 0),
            "invalid_field",
            event_type="review",
        ),
        _with(
            "revenue",
            negative | st.text(max_size=5) | st.none(),
            "invalid_field",
            event_type="purchase",
        ),
    )
    out: list[tuple[bytes, str]] = []

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(cases)
    def collect(case: tuple[bytes, str]) -> None:
        out.append(case)

    collect()
    return out


def decoded_reason(decoder: Decoder, raw: bytes | None) -> str | None:
    if raw is None:
        return "tombstone"
    d = decoder.decode(raw)
    return None if d.rejection is None else d.rejection.reason


def test_hostile_payloads_at_a_live_worker(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    worker = start_worker()
    wait_for(lambda: worker.request("/ready")[0] == 200, 90, "/ready")
    topic = worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]
    decoder = Decoder(MAX, 3600.0, time.time)

    # Every payload is rejected for the reason it was built to get, offline first.
    for name, raw, reason in HAND_WRITTEN:
        assert decoded_reason(decoder, raw) == reason, name
    generated = corpus()
    wrong = [(want, decoded_reason(decoder, raw), raw[:80]) for raw, want in generated]
    wrong = [w for w in wrong if w[0] != w[1]]
    assert not wrong, f"{len(wrong)} payloads decoded with another reason, e.g. {wrong[:3]}"
    kinds = Counter(reason for _, reason in generated)
    assert len(generated) == 300 and len(kinds) == 7, kinds  # every kind of rule is tried
    messages = [(f"hand-{i}", raw) for i, (_, raw, _) in enumerate(HAND_WRITTEN)]
    messages += [(f"gen-{i}", raw) for i, (raw, _) in enumerate(generated)]

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap.split(","), max_request_size=4 * MAX)
    for key, raw in messages:
        producer.send(topic, key=key.encode(), value=raw)
    # A valid event under the wrong key is not a dead letter: it is re-routed and applied.
    wrong_key = enc(event("wrong-key-user"))
    producer.send(topic, key=b"not-the-user", value=wrong_key)
    producer.flush()

    letters = consume_all(
        kafka_bootstrap, worker.env["STREAM_APP_TOPIC_DLQ"], len(messages), timeout=120
    )
    by_key = {json.loads(m.value)["key"]: json.loads(m.value) for m in letters}
    assert len(letters) == len(messages) == len(by_key)
    for i, (name, _, reason) in enumerate(HAND_WRITTEN):
        assert by_key[f"hand-{i}"]["reason"] == reason, name
    for i, (raw, reason) in enumerate(generated):
        assert by_key[f"gen-{i}"]["reason"] == reason, raw[:80]

    wait_for(lambda: worker.metric("churn_events_total") >= 1, 60, "the re-routed event")
    assert worker.metric("churn_events_invalid_total") == len(letters)
    assert worker.metric("churn_events_rerouted_total") == 1
    assert worker.request("/users/wrong-key-user")[0] == 200

    # Still alive and still applying events; the agent never crashed or restarted.
    with KafkaProducer(bootstrap_servers=kafka_bootstrap.split(",")) as p:
        p.send(topic, key=b"after", value=enc(event("after"))).get(timeout=30)
    wait_for(lambda: worker.request("/users/after")[0] == 200, 60, "an event after the storm")
    log = worker.log.read_text(errors="replace")
    for bad in ("Traceback", "unexpected error", "Restarting", "crashed"):
        assert bad not in log, f"worker log has {bad!r}"
    counts = Counter(letter["reason"] for letter in by_key.values())
    print(f"\n{len(letters)} dead letters by reason: {dict(counts)}")

    # The CLI on the same payloads in a file: a line and a reason each, no traceback.
    path = tmp_path / "hostile.jsonl"
    lines = [raw for _, raw in messages if raw is not None and b"\n" not in raw]
    path.write_bytes(b"\n".join(lines) + b"\n" + enc(event("ok")) + b"\n")
    env = worker.env
    for args in (
        ["validate", str(path)],
        ["evaluate", str(path), "--quiet"],
        ["replay", str(path)],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "stream_app.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "Traceback" not in run.stderr, (args, run.stderr[-2000:])
        assert run.returncode in (0, 1), (args, run.returncode, run.stderr[-2000:])
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary, args
    validate = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "validate", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    reported = [ln for ln in validate.stderr.splitlines() if ln.startswith(f"{path}:")]
    assert len(reported) == json.loads(validate.stdout)["invalid"] > 150
