"""One frozen Settings object, built once at the entry point and passed down."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from stream_app.core.config import EngineConfig, LearnerConfig, ModelConfig
from stream_app.core.durations import format_duration as format_duration
from stream_app.core.durations import parse_duration as parse_duration
from stream_app.errors import ConfigError

log = logging.getLogger(__name__)


def _duration_list(value: object) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError("expected a comma-separated list of durations, e.g. 1d,3d,7d")
    return tuple(sorted(parse_duration(v) for v in value))


Duration = Annotated[float, BeforeValidator(parse_duration)]
# NoDecode: the env value is "1d,3d,7d", not JSON.
DurationList = Annotated[tuple[float, ...], NoDecode, BeforeValidator(_duration_list)]


class Settings(BaseSettings):
    """Every knob of the engine and the worker. Environment: ``STREAM_APP_<NAME>``.

    ``KAFKA_BOOTSTRAP_SERVERS`` is read without the prefix because it is the name every
    Kafka tool already uses.
    """

    model_config = SettingsConfigDict(
        env_prefix="STREAM_APP_",
        frozen=True,
        extra="ignore",
        env_parse_none_str="",
    )

    # --- Kafka and Faust ------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        default="localhost:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS",
            "STREAM_APP_KAFKA_BOOTSTRAP_SERVERS",
            "kafka_bootstrap_servers",
        ),
        description="Comma-separated host:port list of Kafka brokers.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every client (Faust, the learner, model sync, the CLI) talks to "
        "the brokers; the SASL and SSL settings below apply to all of them.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_PLAINTEXT, SASL_SSL)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (never printed: `stream-app config` masks it)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None,
        description="PEM file of the CA that signed the brokers' certificates (SSL, "
        "SASL_SSL); the system's CAs when unset.",
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for brokers that require mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="Private key of the certificate.")
    app_id: str = Field("churn-stream", min_length=1, description="Faust app id = consumer group.")
    topic_partitions: int = Field(8, ge=1, le=1024, description="Partitions of input/state topics.")
    topic_replication: int = Field(
        1,
        ge=1,
        le=7,
        description="Replication factor of every topic the worker creates (Faust's changelog "
        "and leader topics included).",
    )
    topic_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=7,
        description="min.insync.replicas of every topic the worker creates (unset: the "
        "broker's default). With acks=all, a write needs this many replicas: 2 with "
        "replication 3 keeps writing through the loss of one broker and loses nothing.",
    )
    topic_clickstream: str = Field("clickstream", description="Input events, key = user_id.")
    topic_dlq: str = Field("clickstream.dlq", description="Dead letters (bad input + reason).")
    topic_training: str = Field(
        "churn.training",
        description="Resolved training examples (created with 1 partition: one learner).",
    )
    topic_model: str = Field(
        "churn.model",
        description="Model snapshots (created with 1 partition, compacted); every worker "
        "reads it from the start.",
    )
    topic_decisions: str = Field(
        "retention.decisions",
        description="Audit of every policy decision (treatment, holdout, suppressed), key = "
        "user_id.",
    )
    topic_interventions: str = Field(
        "retention.interventions",
        description="Interventions for the CRM (treatment only), key = user_id.",
    )
    topic_erasure: str = Field(
        "user.erasure",
        description="Erasure requests (schemas/erasure.py), key = user_id, partitioned like "
        "the clickstream.",
    )
    topic_erasure_audit: str = Field(
        "user.erasure.audit",
        description="One audit record per erasure carried out, key = user_id.",
    )
    store: str = Field(
        "memory://",
        description="Faust table store URL. memory:// rebuilds tables from their changelog "
        "at start; rocksdb:// needs faust-streaming[rocksdb].",
    )
    data_dir: str = Field("./stream-app-data", description="Faust data directory.")
    web_host: str = Field("127.0.0.1", description="Bind address of the HTTP server.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port of /metrics and the API.")
    canonical_url: str | None = Field(
        None,
        description="URL other workers reach this one's web server at (to route "
        "/users/{id}); default http://WEB_HOST:WEB_PORT.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="When set, /users/{id} and /model require "
        "'Authorization: Bearer <token>'. Required when WEB_HOST is not loopback.",
    )
    api_allow_open: bool = Field(
        False,
        description="UNSAFE: let a worker whose WEB_HOST is not loopback serve /users/{id} "
        "and /model without API_TOKEN (to anyone who reaches the port).",
    )
    snapshot_max_interval: Duration = Field(
        30.0,
        gt=0,
        description="Live learner: publish a snapshot at least this often (wall clock) "
        "while it has learned anything new, even short of SNAPSHOT_EVERY labels.",
    )
    state_flush_interval: Duration = Field(
        1.0,
        gt=0,
        le=60.0,
        description="Write-back of user state: every this often, each user changed since "
        "the last flush is written once to the users table's changelog; once the broker "
        "confirmed those writes and every other record the flushed events caused, their "
        "offsets become committable. Longer writes each busy user less often; a crash "
        "redoes the events since the last commit (Faust commits every 2.8 s) either way.",
    )
    state_flush_events: int = Field(
        20_000,
        ge=1,
        description="Flush user state early once this many applied events wait for it.",
    )
    idle_advance: Duration = Field(
        0.0,
        ge=0,
        description="Opt-in, 0 = off: a clickstream partition that is caught up and got no "
        "event for this long moves its stream time to the wall clock minus this long, so "
        "silence deadlines (win-backs) fire in a quiet night too. Live and replay then "
        "differ, and events delayed by more than this plus ALLOWED_LATENESS become "
        "late_event dead letters.",
    )
    erasure_marker_ttl: Duration = Field(
        30 * 86400.0,
        gt=0,
        description="How long an erasure marker drops the erased user's clickstream events "
        "that were sent before the request but read after it (docs/privacy.md); then it is "
        "deleted.",
    )
    batch_max_records: int = Field(
        2_000,
        ge=1,
        le=100_000,
        description="Clickstream records the score service applies as one batch (the "
        "records of one partition from one fetch, split at this size).",
    )
    state_cache_users: int = Field(
        100_000,
        ge=0,
        description="User states kept as objects between flushes; beyond this many, the "
        "users not changed since the last flush are packed (memory://, about 1.9 KB each "
        "instead of about 5 KB) or left to RocksDB (rocksdb://).",
    )
    rocksdb_write_buffer_mb: int = Field(
        8,
        ge=1,
        le=1024,
        description="rocksdb:// store: memtable size per partition (two are kept). Faust's "
        "default, 64 MiB x 3, holds ~200 MiB of state in memory per partition.",
    )
    rocksdb_block_cache_mb: int = Field(
        32,
        ge=0,
        le=65536,
        description="rocksdb:// store: block cache per partition (Faust's default is 2 GiB).",
    )
    stall_timeout: Duration = Field(
        120.0,
        ge=30.0,
        description="Stall watchdog: an owned partition with lag whose committed offset has "
        "not moved for this long (outside a rebalance) is stuck: churn_partition_stalled=1 "
        "and an error log line.",
    )
    stall_exit: bool = Field(
        True,
        description="When a partition is stuck, stop the worker (gracefully: state flushed, "
        "offsets committed) so that the orchestrator restarts it and it fetches again.",
    )
    shutdown_timeout: Duration = Field(
        20.0,
        gt=0,
        le=600.0,
        description="A worker's graceful stop (SIGTERM, Ctrl-C, the stall watchdog) takes at "
        "most this long, even with the brokers gone; past it the worker logs why and exits "
        "with status 3. Keep it under the orchestrator's grace period (30 s in Kubernetes).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Worker log level."
    )
    session_timeout: Duration = Field(
        10.0,
        ge=6.0,
        le=90.0,
        description="Consumer group session timeout: how long the group waits for a worker "
        "that died without leaving (kill -9, OOM) before giving its partitions to others or "
        "to its restarted self. Heartbeats come from Faust's consumer thread every 3 s.",
    )

    # --- Ingest -----------------------------------------------------------------------
    max_message_bytes: int = Field(65536, ge=256, description="Larger messages are dead letters.")
    max_future_skew: Duration = Field(
        3600.0, description="Events further ahead of the wall clock than this are dead letters."
    )
    allowed_lateness: Duration = Field(
        EngineConfig.allowed_lateness,
        description="Watermark = stream time - this; "
        "events older than the watermark are dead letters.",
    )
    dedup_capacity: int = Field(
        EngineConfig.dedup_capacity, ge=8, le=10_000, description="event_ids remembered per user."
    )
    dlq_payload_bytes: int = Field(4096, ge=0, description="Original bytes kept in a dead letter.")

    # --- Engine -----------------------------------------------------------------------
    half_lives: DurationList = Field(
        tuple(EngineConfig.half_lives), description="Half-lives of decayed counters (1d,7d,30d)."
    )
    session_gap: Duration = Field(
        EngineConfig.session_gap, gt=0, description="Inactivity that ends a session."
    )
    score_min_interval: Duration = Field(
        EngineConfig.score_min_interval,
        description="Rescore a user on an ordinary event at most this often (event time).",
    )
    rescore_after: DurationList = Field(
        tuple(EngineConfig.rescore_after),
        description="Silence deadlines after last activity.",
    )
    horizon: Duration = Field(EngineConfig.horizon, gt=0, description="Churn label horizon H.")
    label_activity: Literal["session", "purchase"] = Field(
        EngineConfig.label_activity,
        description="What counts as coming back: a new session, or a purchase.",
    )
    label_release: Literal["horizon", "activity"] = Field(
        EngineConfig.label_release,
        description="Release training examples at scored_at + horizon (unbiased) "
        "or as soon as their label is known.",
    )
    snapshot_interval: Duration = Field(
        EngineConfig.snapshot_interval,
        gt=0,
        description="At most one training example per user per this interval.",
    )
    eval_warmup: Duration = Field(
        30 * 86400.0,
        description="Offline evaluation: no labels from the file's first this much event time.",
    )
    learning_rate: float = Field(
        ModelConfig.learning_rate, gt=0, le=10, description="SGD step of the logistic regression."
    )
    l2: float = Field(
        ModelConfig.l2, ge=0, le=10, description="L2 penalty of the logistic regression."
    )
    min_labels_ready: int = Field(
        ModelConfig.min_labels_ready,
        ge=0,
        description="Labels before the model replaces the cold-start prior.",
    )
    snapshot_every: int = Field(
        LearnerConfig.snapshot_every,
        ge=1,
        description="The learner publishes a model snapshot every this many labels.",
    )
    rolling_window: int = Field(
        LearnerConfig.rolling_window,
        ge=10,
        description="Labels in the rolling AUC / log loss window (also judges the hand-over).",
    )
    example_dedup: int = Field(
        LearnerConfig.example_dedup,
        ge=0,
        description="Training example ids the learner remembers to skip redelivered ones.",
    )

    # --- Retention policy -------------------------------------------------------------
    policy_file: str | None = Field(
        None,
        description="TOML file of the retention policy (docs/policy.md); "
        "unset = the built-in defaults.",
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("api_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("a blank token would let anyone in: unset it or set a random one")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if (
            self.topic_min_insync_replicas is not None
            and self.topic_min_insync_replicas > self.topic_replication
        ):
            raise ValueError(
                f"STREAM_APP_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) "
                f"cannot exceed STREAM_APP_TOPIC_REPLICATION ({self.topic_replication}): no "
                "write could succeed"
            )
        if not self.half_lives:
            raise ValueError("STREAM_APP_HALF_LIVES must list at least one duration")
        if self.rescore_after and self.rescore_after[-1] >= self.horizon + 86400 * 365:
            raise ValueError(
                "STREAM_APP_RESCORE_AFTER deadlines must be within a year past STREAM_APP_HORIZON"
            )
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "STREAM_APP_KAFKA_SASL_USERNAME and STREAM_APP_KAFKA_SASL_PASSWORD"
            )
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"STREAM_APP_{name.upper()}: no such file: {path}")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("set STREAM_APP_KAFKA_SSL_CERTFILE and _KEYFILE together")
        # A policy file that is not there would silently mean the built-in defaults in
        # `config` and a failed start in the worker: refuse it everywhere, at once.
        if self.policy_file is not None and not Path(self.policy_file).is_file():
            raise ValueError(f"STREAM_APP_POLICY_FILE: no such file: {self.policy_file}")
        return self

    def display(self) -> dict[str, Any]:
        """The settings as `stream-app config` prints them: secrets masked, durations the
        way they are written (``30d``, not ``2592000.0``)."""
        out: dict[str, Any] = self.model_dump(mode="json")
        for name in duration_fields():
            value = getattr(self, name)
            if isinstance(value, tuple):
                out[name] = ",".join(format_duration(v) for v in value)
            else:
                out[name] = format_duration(value)
        return out

    @property
    def bootstrap_url(self) -> str:
        """Faust's broker URL form: kafka://host:port;host:port."""
        return ";".join(f"kafka://{h.strip()}" for h in self.kafka_bootstrap_servers.split(","))

    # --- the core's configuration objects (the core never reads the settings) -----------
    def as_engine_config(self) -> EngineConfig:
        return EngineConfig(
            half_lives=tuple(self.half_lives),
            session_gap=self.session_gap,
            score_min_interval=self.score_min_interval,
            rescore_after=tuple(self.rescore_after),
            horizon=self.horizon,
            label_activity=self.label_activity,
            snapshot_interval=self.snapshot_interval,
            allowed_lateness=self.allowed_lateness,
            dedup_capacity=self.dedup_capacity,
            label_release=self.label_release,
        )

    def as_model_config(self) -> ModelConfig:
        return ModelConfig(
            learning_rate=self.learning_rate, l2=self.l2, min_labels_ready=self.min_labels_ready
        )

    def as_learner_config(self) -> LearnerConfig:
        return LearnerConfig(
            snapshot_every=self.snapshot_every,
            rolling_window=self.rolling_window,
            example_dedup=self.example_dedup,
        )


def duration_fields() -> list[str]:
    """Names of the settings that hold durations (seconds, written as 30d, 12h, ...)."""
    parsers = (parse_duration, _duration_list)
    return [
        name
        for name, info in Settings.model_fields.items()
        if any(getattr(m, "func", None) in parsers for m in info.metadata)
    ]


# STREAM_APP_ variables that are not settings: read by the development tools.
NOT_SETTINGS = frozenset({"STREAM_APP_KAFKA_LIBS"})  # tools/kafka/localkafka.py


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``STREAM_APP_*`` variable that names no setting (a typo is otherwise
    silently ignored and the default used), with the closest setting's variable."""
    known = {f"STREAM_APP_{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for var in sorted(environ):
        if var.startswith("STREAM_APP_") and var not in known and var not in NOT_SETTINGS:
            # Compare the names after the prefix: the shared prefix makes everything close.
            name = var.removeprefix("STREAM_APP_").lower()
            close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
            hint = f"; did you mean STREAM_APP_{close[0].upper()}?" if close else ""
            warnings.append(f"{var} is not a setting and is ignored{hint}")
    return warnings


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment (plus overrides); a bad value raises ConfigError
    naming the setting and the environment variable that holds it. Unknown STREAM_APP_*
    variables are logged as warnings."""
    for warning in unknown_variables(os.environ):
        log.warning("%s", warning)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a rule across settings: its message names them
                lines.append(f"invalid settings: {msg}")
                continue
            # (an alias such as KAFKA_BOOTSTRAP_SERVERS comes back as the loc: the field's name)
            name = ".".join(str(p) for p in err["loc"]).lower().removeprefix("stream_app_")
            env = (
                "KAFKA_BOOTSTRAP_SERVERS"
                if name == "kafka_bootstrap_servers"
                else f"STREAM_APP_{name.upper()}"
            )
            lines.append(f"invalid setting {name} ({env}): {msg}")
        raise ConfigError("\n".join(lines)) from None
