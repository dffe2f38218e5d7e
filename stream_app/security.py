"""One place that turns the Kafka security settings into each client library's options.

Faust (the worker's consumer and producer), aiokafka (the learner and model sync
consumers) and kafka-python (the CLI's producers, the admin client, the model preload) name
the same things differently; everything the project creates goes through here, so a
SASL_SSL cluster needs the settings once (README, "Security")."""

from __future__ import annotations

import ssl
from typing import Any

import faust

from stream_app.settings import Settings


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
