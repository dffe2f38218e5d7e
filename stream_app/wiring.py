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
class Base:
    """What the services of one worker are built from (create_app makes these first)."""

    settings: Settings
    metrics: Metrics
    engine: Engine
    users: Any  # the Faust table "users" (UserState by user_id)
    topics: Topics
    app: Any  # the Faust app these are wired into
    cache: UserCache  # write-back cache in front of ``users`` (score agent)


@dataclass
class Deps(Base):
    """Shared by the agents, services and web views of one worker, built whole by
    :func:`build_deps` before any of them is registered: the agents' ``register`` functions
    only attach these to the app (agents, tasks, services, views)."""

    committer: Committer
    score: ScoreHandler
    score_service: ScoreService
    model: ModelSync
    model_service: ModelSyncService
    learner: LearnerService


def build_deps(base: Base) -> Deps:
    """The services of one worker, built on ``base``: the score service (its handler and
    committer), the model sync and its service, the learner service."""
    # The agents' modules import this one: imported here, once it is loaded.
    from stream_app.agents import learner, model_sync, score

    scoring = score.ScoreService(base.app, base)
    syncing = model_sync.new_service(base)
    return Deps(
        base.settings,
        base.metrics,
        base.engine,
        base.users,
        base.topics,
        base.app,
        base.cache,
        committer=scoring.committer,
        score=scoring.handler,
        score_service=scoring,
        model=syncing.sync,
        model_service=syncing,
        learner=learner.new_service(base),
    )


def build_engine(settings: Settings) -> Engine:
    """The engine both drivers run: its configuration and the retention policy from the
    settings (STREAM_APP_POLICY_FILE, built-in defaults when unset; a file with
    ``enabled = false`` runs none). A bad policy file raises ConfigError."""
    engine = Engine(settings.as_engine_config())
    config = load_policy(settings.policy_file)
    if config.enabled:
        engine.policy = Policy(config, engine.space, engine.config.horizon)
    return engine
