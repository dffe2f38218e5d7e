"""`stream-app erase`: erasure requests onto the erasure topic (schemas/erasure.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import ValidationError

from schemas.erasure import ErasureRequest
from stream_app.errors import StreamAppError
from stream_app.kafka.security import kafka_python_options
from stream_app.kafka.topics import check_reachable, ensure_topics
from stream_app.settings import Settings


def build_requests(user_ids: Sequence[str], requested_by: str | None) -> list[ErasureRequest]:
    """One request per distinct user id; a bad id is an error naming it, before any send."""
    now = datetime.now(tz=UTC)
    out: list[ErasureRequest] = []
    for uid in dict.fromkeys(user_ids):
        try:
            out.append(
                ErasureRequest(
                    request_id=uuid.uuid4().hex,
                    user_id=uid,
                    requested_at=now,
                    requested_by=requested_by,
                )
            )
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise StreamAppError(f"cannot erase {uid!r}: {where}: {err['msg']}") from None
    return out


def send_erasures(
    settings: Settings, user_ids: Sequence[str], requested_by: str | None = None
) -> list[str]:
    """Send the requests (keyed by user_id: the default partitioner puts each on its user's
    partition) and wait until the broker has them; returns one JSON line per request."""
    requests = build_requests(user_ids, requested_by)
    check_reachable(settings)
    ensure_topics(settings, internal=False)
    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            acks="all",
            client_id=f"{settings.app_id}-erase",
            **kafka_python_options(settings),
        )
    except KafkaError as exc:
        raise StreamAppError(f"cannot reach Kafka: {exc}") from None
    lines: list[str] = []
    try:
        for req in requests:
            meta = producer.send(
                settings.topic_erasure,
                key=req.user_id.encode(),
                value=req.model_dump_json().encode(),
            ).get(timeout=30)
            lines.append(
                json.dumps(
                    {
                        "request_id": req.request_id,
                        "user_id": req.user_id,
                        "topic": meta.topic,
                        "partition": meta.partition,
                        "offset": meta.offset,
                    }
                )
            )
    except KafkaError as exc:
        raise StreamAppError(f"sending erasure requests failed: {exc}") from None
    finally:
        producer.close()
    return lines
