"""A small producer for Python services: validates, keys by user_id, waits for all replicas.

>>> from stream_app.kafka.producer import ChurnProducer          # doctest: +SKIP
>>> with ChurnProducer("localhost:9092") as producer:       # doctest: +SKIP
...     producer.send({"event_id": "e1", "user_id": "u1", "event_type": "purchase",
...                    "ts": "2026-01-05T12:00:00Z", "revenue": 42.0})
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka import KafkaProducer

from schemas.events import Event
from stream_app.errors import StreamAppError
from stream_app.ingest import Decoder
from stream_app.jsonl import iter_lines
from stream_app.offline.treatment import TreatmentSimulator


class InvalidEvent(StreamAppError):
    """The event breaks the contract; ``reason`` and ``field`` say how."""

    def __init__(self, reason: str, field: str | None, detail: str) -> None:
        super().__init__(f"{reason}: field={field or '-'}: {detail}")
        self.reason = reason
        self.field = field


class ChurnProducer:
    """kafka-python producer with the contract's rules: JSON value, key = user_id, acks=all.

    Events are validated before sending, so a bad one raises :class:`InvalidEvent` here
    instead of landing in the dead-letter topic.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "clickstream",
        max_message_bytes: int = 65536,
        **kafka_options: Any,
    ) -> None:
        self.topic = topic
        self._decoder = Decoder(max_message_bytes, max_future_skew=3600.0, clock=time.time)
        options: dict[str, Any] = {"acks": "all", "linger_ms": 5, "retries": 5}
        options.update(kafka_options)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), **options)

    def encode(self, event: Mapping[str, Any] | Event | bytes) -> tuple[bytes, bytes]:
        """(key, value) for an event, or InvalidEvent."""
        if isinstance(event, bytes):
            raw = event
        elif isinstance(event, Mapping):
            raw = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        else:
            raw = event.model_dump_json(exclude_none=True).encode()
        decoded = self._decoder.decode(raw)
        if decoded.rejection is not None:
            r = decoded.rejection
            raise InvalidEvent(r.reason, r.field, r.detail)
        assert decoded.event is not None
        return decoded.event.user_id.encode(), raw

    def send(self, event: Mapping[str, Any] | Event | bytes) -> Any:
        """Validate and send one event; returns kafka-python's future."""
        key, value = self.encode(event)
        return self._producer.send(self.topic, key=key, value=value)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> ChurnProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def untreated_world(decoder: Decoder, raw: bytes) -> bool:
    """False for an event of a generated "saved" future (``generate --treatment-effect``):
    live, nobody was intervened on before the replay, so only the churn path happens."""
    decoded = decoder.decode(raw)
    return decoded.event is None or TreatmentSimulator.keep(decoded.event, None, decoded.ts)


def replay(
    path: Path, producer: ChurnProducer, rate: float = 0.0, skip_invalid: bool = True
) -> dict[str, int]:
    """Send a JSONL file's events in file order; invalid lines are counted and skipped
    (``skip_invalid``) or sent as they are, to exercise the dead-letter path. Events of a
    generated treated-only future are not sent."""
    sent = invalid = 0
    start = time.monotonic()
    lines: Iterable[tuple[int, bytes]] = iter_lines(path)
    for _, raw in lines:
        if b'"treatment_path"' in raw and not untreated_world(producer._decoder, raw):
            continue  # a generated "saved" future: it only happens after an intervention
        try:
            producer.send(raw)
            sent += 1
        except InvalidEvent:
            invalid += 1
            if not skip_invalid:
                producer._producer.send(producer.topic, key=None, value=raw)
                sent += 1
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    return {"sent": sent, "invalid": invalid}
