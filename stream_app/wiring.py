"""What create_app builds once and hands to every agent, service and view."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from stream_app.core.engine import Engine
from stream_app.core.policy.config import load_policy
from stream_app.core.policy.decide import Policy
from stream_app.metrics import Metrics
from stream_app.settings import Settings

if TYPE_CHECKING:
    from stream_app.agents.learner import LearnerService
    from stream_app.agents.model_sync import ModelSync, ModelSyncService
    from stream_app.agents.score import ScoreHandler, ScoreService
    from stream_app.runtime.committer import Committer
    from stream_app.runtime.user_cache import UserCache


@dataclass
class Topics:
    """Faust topics by role (raw bytes in and out: decoding is ours)."""

    clickstream: Any
    dlq: Any
    training: Any
    model: Any
    decisions: Any
    interventions: Any
    erasure: Any
    erasure_audit: Any

    def by_name(self, name: str) -> Any:
        return getattr(self, name)

    @staticmethod
    def roles() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Topics))


@dataclass
class Deps:
    """Shared by the agents, services and web views of one worker. The agents' modules
    fill in what they register (handler, agent, service)."""

    settings: Settings
    metrics: Metrics
    engine: Engine
    users: Any  # the Faust table "users" (UserState by user_id)
    topics: Topics
    app: Any = None  # the Faust app these were wired into
    cache: UserCache | None = None  # write-back cache in front of ``users`` (score agent)
    committer: Committer | None = None
    score: ScoreHandler | None = None
    score_service: ScoreService | None = None
    model: ModelSync | None = None
    model_service: ModelSyncService | None = None
    learner: LearnerService | None = None


def build_engine(settings: Settings) -> Engine:
    """The engine both drivers run: its configuration and the retention policy from the
    settings (STREAM_APP_POLICY_FILE, built-in defaults when unset; a file with
    ``enabled = false`` runs none). A bad policy file raises ConfigError."""
    engine = Engine(settings.as_engine_config())
    config = load_policy(settings.policy_file)
    if config.enabled:
        engine.policy = Policy(config, engine.space)
    return engine
