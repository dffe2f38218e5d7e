"""Policy configuration: a frozen pydantic model with documented defaults, read from TOML."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from stream_app.core.durations import parse_duration
from stream_app.errors import ConfigError

DAY = 86400.0
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class _Section(BaseModel):
    # extra="forbid": a misspelt key must stop start-up, not silently keep the default.
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tiers(_Section):
    """low < mid <= risk < high <= risk."""

    mid: Probability = 0.3
    high: Probability = 0.6

    def of(self, risk: float) -> int:
        """0, 1 or 2: the tier (low, mid, high) of ``risk``."""
        return 2 if risk >= self.high else 1 if risk >= self.mid else 0


class Spike(_Section):
    risk: Literal["left", "p"] = Field(
        "left",
        description="What the thresholds judge. left: the chance the user has left, the "
        "score less the chance that a loyal user of their recent session rate has no "
        "session in the whole horizon ((p - quiet) / (1 - quiet)); p: the score itself.",
    )
    entry: Probability = Field(
        0.38, description="Risk at or above this can be flagged (the learned model scores)."
    )
    prior_entry: Probability = Field(
        0.26, description="The same while the cold-start prior scores (recency alone)."
    )
    jump: Probability = Field(0.15, description="Rise over the user's own baseline.")
    baseline_half_life: PositiveSeconds = Field(7 * DAY, description="EWMA of past risks.")
    tier_increase: bool = Field(True, description="A rise to a higher tier also counts.")
    rearm_below: Probability = Field(0.2, description="Hysteresis: re-arm below this risk.")


class Limits(_Section):
    cooldown: Seconds = Field(7 * DAY, description="Minimum time between two interventions.")
    user_cap: int = Field(2, ge=1, description="Interventions per user per user_window.")
    user_window: PositiveSeconds = 30 * DAY
    budget: int = Field(1000, ge=1, description="Interventions per budget_window, all users.")
    budget_window: PositiveSeconds = DAY


class Breaker(_Section):
    window: PositiveSeconds = DAY
    open_share: Probability = Field(0.2, description="Open above this share of users flagged.")
    close_share: Probability = Field(0.1, description="Close again at or below this share.")
    min_scored: int = Field(200, ge=1, description="Judge no share of fewer scored users.")


class Holdout(_Section):
    share: Probability = 0.1
    salt: str = Field("churn-stream-holdout-1", min_length=1, max_length=128)


class Actions(_Section):
    cart_abandonment: float = Field(0.5, ge=0, le=1, description="cart_abandonment feature.")
    high_value_revenue: float = Field(
        100.0, ge=0, allow_inf_nan=False, description="Decayed revenue, longest half-life."
    )
    silent_days: float = Field(7.0, ge=0, allow_inf_nan=False)
    categories: int = Field(3, ge=1, le=8, description="Top categories to recommend.")


ACTIONS = ("cart_reminder", "outreach", "coupon", "win_back", "recommendations")
SegmentBy = Literal["tier", "buyer", "activity", "value", "category"]
Cost = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def _comma_list(value: Any) -> Any:
    """A TOML list, or the same as one comma-separated string ("buyer,activity")."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Costs(_Section):
    """What each action costs, in units of retention probability (0.05: worth sending only
    if it keeps 5 more users in 100 than an action that costs nothing)."""

    cart_reminder: Cost = 0.0
    outreach: Cost = 0.0
    coupon: Cost = 0.0
    win_back: Cost = 0.0
    recommendations: Cost = 0.0


class Bandit(_Section):
    """Thompson sampling over (segment, action); read only with ``chooser = "bandit"``."""

    segments: Annotated[tuple[SegmentBy, ...], BeforeValidator(_comma_list)] = Field(
        ("buyer", "activity", "value"), description="User facts that make a segment."
    )
    value_bands: Annotated[
        tuple[Annotated[float, Field(allow_inf_nan=False)], ...], BeforeValidator(_comma_list)
    ] = Field((50.0, 200.0), description="Revenue edges of the value bands (increasing).")
    prior_strength: float = Field(4.0, gt=0, le=1e6, allow_inf_nan=False)
    prior_mean: float = Field(0.5, gt=0, lt=1, allow_inf_nan=False)
    rules_bonus: float = Field(0.3, ge=0, lt=1, allow_inf_nan=False)
    floor: float = Field(0.02, ge=0, le=0.2, description="Exploration share per action.")
    costs: Costs = Costs()


class Reasons(_Section):
    k: int = Field(3, ge=0, le=10, description="Reason codes per decision.")


def _increasing(xs: tuple[float, ...]) -> bool:
    return all(a < b for a, b in zip(xs, xs[1:], strict=False))


class PolicyConfig(_Section):
    """Everything the retention policy reads; docs/policy.md explains each key."""

    enabled: bool = True
    train_on_treated: bool = True
    chooser: Literal["rules", "bandit"] = "rules"
    tiers: Tiers = Tiers()
    spike: Spike = Spike()
    limits: Limits = Limits()
    breaker: Breaker = Breaker()
    holdout: Holdout = Holdout()
    actions: Actions = Actions()
    reasons: Reasons = Reasons()
    bandit: Bandit = Bandit()

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        # Cross-key rules, each message starting with the key to fix.
        checks = (
            (self.tiers.high > self.tiers.mid, "tiers.high", "must be > tiers.mid"),
            (self.tiers.mid > 0, "tiers.mid", "must be > 0"),
            (
                self.spike.rearm_below <= min(self.spike.entry, self.spike.prior_entry),
                "spike.rearm_below",
                "must be <= spike.entry and spike.prior_entry (hysteresis re-arms below the "
                "entry threshold)",
            ),
            (
                self.breaker.close_share < self.breaker.open_share,
                "breaker.close_share",
                "must be < breaker.open_share",
            ),
            (
                _increasing(self.bandit.value_bands),
                "bandit.value_bands",
                "must be increasing",
            ),
            (
                len(set(self.bandit.segments)) == len(self.bandit.segments),
                "bandit.segments",
                "must not repeat a fact",
            ),
            (
                self.bandit.prior_mean + self.bandit.rules_bonus < 1,
                "bandit.rules_bonus",
                "must be < 1 - bandit.prior_mean",
            ),
        )
        for ok, key, msg in checks:
            if not ok:
                raise PydanticCustomError("policy", "{key}: {msg}", {"key": key, "msg": msg})
        return self

    @property
    def version(self) -> str:
        """Short hash of the effective configuration, stamped on every decision."""
        data = self.model_dump(mode="json")
        if self.chooser == "rules":
            # The rules ignore the bandit's keys: files written before the chooser existed
            # keep their version, hence their decision ids.
            del data["chooser"], data["bandit"]
        doc = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(doc.encode()).hexdigest()[:12]


def load_policy(path: str | Path | None) -> PolicyConfig:
    """The built-in defaults, or the TOML file at ``path`` over them; raises ConfigError
    naming the file and the key."""
    if path is None:
        return PolicyConfig()
    where = f"policy file {path}"
    try:
        data: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
        raise ConfigError("\n".join(lines)) from None
