"""SASL/SSL settings reach every Kafka client the project creates, and the password is
never shown."""

from __future__ import annotations

import ast
import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest

from stream_app.errors import ConfigError
from stream_app.kafka import security
from stream_app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pa55-w0rd-that-must-not-leak"  # noqa: S105 (a test value)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A self-signed CA certificate and key, made with openssl."""
    key, crt = tmp_path / "ca.key", tmp_path / "ca.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    return crt


def test_plaintext_is_the_default_everywhere() -> None:
    s = load_settings()
    assert security.faust_credentials(s) is None
    assert security.aiokafka_options(s) == {"security_protocol": "PLAINTEXT"}
    assert security.kafka_python_options(s) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_maps_to_each_client_family(ca: Path) -> None:
    s = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="churn",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=str(ca),
    )
    creds = security.faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.username == "churn" and creds.password == SECRET
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert SECRET not in repr(creds)

    aio = security.aiokafka_options(s)
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert aio["sasl_plain_username"] == "churn" and aio["sasl_plain_password"] == SECRET
    assert aio["ssl_context"].verify_mode == ssl.CERT_REQUIRED

    kp = security.kafka_python_options(s)
    assert kp == {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(ca),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "churn",
        "sasl_plain_password": SECRET,
    }


def test_ssl_only_has_no_sasl_options(ca: Path) -> None:
    s = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(ca))
    assert isinstance(security.faust_credentials(s), faust.SSLCredentials)
    assert set(security.aiokafka_options(s)) == {"security_protocol", "ssl_context"}
    assert security.kafka_python_options(s) == {
        "security_protocol": "SSL",
        "ssl_cafile": str(ca),
    }


def test_the_aiokafka_consumer_gets_the_credentials(ca: Path) -> None:
    from stream_app.kafka.clients import consumer

    s = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="churn",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=str(ca),
    )

    async def build() -> None:  # aiokafka clients are made inside a running loop
        c = consumer(s, "t", group_id="g")
        assert c._client._security_protocol == "SASL_SSL"
        assert c._client._sasl_plain_password == SECRET and c._client._ssl_context is not None

    asyncio.run(build())


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "SASL_PASSWORD"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "/nonexistent/ca.pem",
        ),
        ({"kafka_security_protocol": "KERBEROS"}, "KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_a_bad_security_setting_is_a_config_error_naming_it(
    settings: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(**settings)
    assert needle in str(err.value)


def test_the_password_is_masked_in_config_and_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_APP_KAFKA_SASL_USERNAME", "churn")
    monkeypatch.setenv("STREAM_APP_KAFKA_SASL_PASSWORD", SECRET)
    out = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert SECRET not in out
    assert json.loads(out)["kafka_sasl_password"] == "**********"  # noqa: S105
    assert SECRET not in repr(load_settings())


CLIENTS = {
    "KafkaProducer",
    "KafkaConsumer",
    "KafkaAdminClient",
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "AIOKafkaAdminClient",
}


def test_every_kafka_client_the_project_creates_goes_through_the_security_mapping() -> None:
    """Each place that constructs a Kafka client passes the mapped options: in the same
    function (kafka_python_options / aiokafka_options), or, for ChurnProducer, from its
    callers (its **kafka_options)."""
    missing = []
    for path in sorted((ROOT / "stream_app").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            calls = [
                n
                for n in ast.walk(fn)
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) in CLIENTS
            ]
            if not calls:
                continue
            body = ast.unparse(fn)
            ok = "kafka_python_options(" in body or "aiokafka_options(" in body
            if fn.name == "__init__" and path.name == "producer.py":
                ok = "**kafka_options" in body
            if not ok:
                missing.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}")
    assert missing == []
    callers = (ROOT / "stream_app" / "cli.py").read_text()
    assert "**kafka_python_options(settings)" in callers  # the replay command's producer


def sasl_settings() -> object:
    return load_settings(
        kafka_bootstrap_servers="127.0.0.1:1,127.0.0.1:2",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="churn",
        kafka_sasl_password=SECRET,
    )


def test_a_refused_login_is_one_line_naming_the_sasl_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    tried: list[int] = []

    async def broker(host: str, port: int, **options: object) -> object:
        tried.append(port)
        if port == 1:  # the first bootstrap server is down: the next one is asked
            raise KafkaConnectionError("refused")
        assert options["sasl_plain_password"] == SECRET
        raise SaslAuthenticationFailed("Authentication failed: invalid credentials")

    monkeypatch.setattr(security, "create_conn", broker)
    with pytest.raises(ConfigError) as err:
        security.check_login(sasl_settings())  # type: ignore[arg-type]
    text = str(err.value)
    assert tried == [1, 2]
    assert "\n" not in text and SECRET not in text
    assert "127.0.0.1:2 refused the SASL_PLAINTEXT login of user 'churn' with SCRAM-SHA-512" in text
    for name in ("USERNAME", "PASSWORD", "MECHANISM"):
        assert f"STREAM_APP_KAFKA_SASL_{name}" in text


def test_no_reachable_broker_is_left_to_the_caller_and_plaintext_is_not_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def down(host: str, port: int, **options: object) -> object:
        raise OSError("connection refused")

    monkeypatch.setattr(security, "create_conn", down)
    security.check_login(sasl_settings())  # type: ignore[arg-type]
    monkeypatch.setattr(security, "create_conn", None)  # would fail if called
    security.check_login(load_settings())


def test_the_login_check_also_runs_from_inside_an_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka.errors import SaslAuthenticationFailed

    async def refuse(host: str, port: int, **options: object) -> object:
        raise SaslAuthenticationFailed("no")

    monkeypatch.setattr(security, "create_conn", refuse)

    async def inside() -> None:
        security.check_login(sasl_settings())  # type: ignore[arg-type]

    with pytest.raises(ConfigError):
        asyncio.run(inside())
