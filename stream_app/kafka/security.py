"""One place that turns the Kafka security settings into each client library's options.

Faust (the worker's consumer and producer), aiokafka (the learner and model sync
consumers) and kafka-python (the CLI's producers, the admin client, the model preload) name
the same things differently; everything the project creates goes through here, so a
SASL_SSL cluster needs the settings once (README, "Security")."""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError

from stream_app.errors import ConfigError
from stream_app.settings import Settings

SASL_SETTINGS = (
    "STREAM_APP_KAFKA_SASL_USERNAME, STREAM_APP_KAFKA_SASL_PASSWORD and "
    "STREAM_APP_KAFKA_SASL_MECHANISM"
)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (CA file, optional client certificate)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
        context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile))
    return context


def _password(settings: Settings) -> str | None:
    secret = settings.kafka_sasl_password
    return secret.get_secret_value() if secret is not None else None


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for faust.App (None: plaintext)."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL"):
        creds = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=_password(settings),
            ssl_context=ssl_context(settings),
            mechanism=settings.kafka_sasl_mechanism,
        )
        return creds
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return None


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer / AIOKafkaProducer."""
    protocol = settings.kafka_security_protocol
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        out["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL"):
        out["sasl_mechanism"] = settings.kafka_sasl_mechanism
        out["sasl_plain_username"] = settings.kafka_sasl_username
        out["sasl_plain_password"] = _password(settings)
    return out


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer, KafkaAdminClient."""
    protocol = settings.kafka_security_protocol
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        if settings.kafka_ssl_cafile is not None:
            out["ssl_cafile"] = str(settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile is not None:
            out["ssl_certfile"] = str(settings.kafka_ssl_certfile)
            out["ssl_keyfile"] = str(settings.kafka_ssl_keyfile)
    if protocol.startswith("SASL"):
        out["sasl_mechanism"] = settings.kafka_sasl_mechanism
        out["sasl_plain_username"] = settings.kafka_sasl_username
        out["sasl_plain_password"] = _password(settings)
    return out


def check_login(settings: Settings, timeout: float = 10.0) -> None:
    """Log in once to the first reachable bootstrap broker and raise ConfigError, one line
    naming the SASL settings, when the broker refuses the credentials or the mechanism.

    Why: kafka-python and aiokafka retry a refused login like an unreachable broker, so a
    wrong password surfaced 30 s later as "Unable to bootstrap" (or as a worker that never
    became ready). An unreachable broker is not reported here: the caller's own client
    says that. Plaintext and SSL without SASL have no login to check."""
    if not settings.kafka_security_protocol.startswith("SASL"):
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: called from the CLI, before any loop runs
        asyncio.run(_check_login(settings, timeout))
        return
    # Called from inside a running loop: asyncio.run cannot nest, so use a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _check_login(settings, timeout)).result()


async def _check_login(settings: Settings, timeout: float) -> None:
    options = aiokafka_options(settings)
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **options),
                timeout,
            )
        except (KafkaConnectionError, OSError, TimeoutError):
            continue  # try the next bootstrap server; none reachable: the caller says so
        except KafkaError as exc:
            detail = str(exc).split(": ", 1)[-1] if "Sasl" in type(exc).__name__ else ""
            raise ConfigError(
                f"Kafka at {server.strip()} refused the {settings.kafka_security_protocol} "
                f"login of user {settings.kafka_sasl_username!r} with "
                f"{settings.kafka_sasl_mechanism} ({type(exc).__name__}"
                + (f": {detail}" if detail else "")
                + f"); check {SASL_SETTINGS}"
            ) from None
        conn.close()
        return
