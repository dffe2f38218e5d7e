"""The core's configuration objects: every default of the engine, model and learner lives
here once. Settings takes its defaults from these classes and builds them
(``Settings.engine_config()`` and so on): the core never reads the settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DAY = 86400.0


@dataclass(frozen=True)
class EngineConfig:
    """Features, timers and labels (see docs/features.md and docs/labels.md)."""

    half_lives: Sequence[float] = (DAY, 7 * DAY, 30 * DAY)
    session_gap: float = 1800.0
    score_min_interval: float = 1800.0
    rescore_after: Sequence[float] = tuple(d * DAY for d in (1, 3, 7, 14, 21, 30, 45, 60, 90))
    horizon: float = 30 * DAY
    label_activity: Literal["session", "purchase"] = "session"
    snapshot_interval: float = 7 * DAY
    allowed_lateness: float = 3600.0
    dedup_capacity: int = 64
    label_release: Literal["horizon", "activity"] = "horizon"


@dataclass(frozen=True)
class ModelConfig:
    """The learner's River pipeline: SGD step, L2 penalty, labels before hand-over."""

    learning_rate: float = 0.005
    l2: float = 1e-4
    min_labels_ready: int = 500


@dataclass(frozen=True)
class LearnerConfig:
    """Snapshot cadence and the window of the prequential metrics. The same in both
    drivers, so the offline evaluator hands models over when the live learner would."""

    snapshot_every: int = 500
    rolling_window: int = 2000
    # Example ids remembered for dedup (a redelivered example arrives soon after the
    # original; 4,096 covers minutes of a busy deployment's labels).
    example_dedup: int = 4096
