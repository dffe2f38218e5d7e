"""The retention policy: one score in, at most one decision out (pure, event time only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from stream_app.core.features import FeatureSpace, UserState
from stream_app.core.model import Scorer
from stream_app.core.policy.actions import Action, ViewBuilder, categories_for, choose_action
from stream_app.core.policy.chooser import Chooser, Posterior, RulesChooser, ThompsonChooser
from stream_app.core.policy.config import ACTIONS, DAY, PolicyConfig
from stream_app.core.policy.ids import decision_id, in_holdout, intervention_id
from stream_app.core.policy.segments import segment_of
from stream_app.core.policy.state import SCALE_KEY, PartitionGuard, UserPolicy

Outcome = Literal["treatment", "holdout", "suppressed"]
Suppression = Literal["breaker_open", "cooldown", "user_cap", "budget"]
Group = Literal["none", "treatment", "holdout"]
Trigger = Literal["event", "silence"]
TIERS: tuple[str, str, str] = ("low", "mid", "high")


class ScoreLike(Protocol):
    """What the policy reads of the engine's ``Score`` (no import: the engine will call us)."""

    @property
    def user_id(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def p(self) -> float: ...
    @property
    def trigger(self) -> Trigger: ...
    @property
    def model_version(self) -> int: ...
    @property
    def features(self) -> Sequence[float]: ...


@dataclass(frozen=True, slots=True)
class DecisionOut:
    """A flagged score: everything the Decision and (for treatment) Intervention carry."""

    decision_id: str
    intervention_id: str | None  # only for treatment
    user_id: str
    ts: float
    trigger: Trigger
    p: float
    previous_p: float | None
    baseline: float | None
    tier: str
    previous_tier: str
    outcome: Outcome
    suppressed_by: Suppression | None
    holdout: bool  # the user's group, whatever the outcome
    action: Action
    categories: list[str]
    reasons: list[tuple[str, float]]
    model_version: int
    policy_version: str
    segment: str = ""  # the user's segment for the bandit (bandit.segments)
    rules_action: Action | None = None  # what the rules chose (the chooser may differ)
    # What the thresholds judged (spike.risk); previous_p, baseline and the tiers are on
    # its scale. None from callers that build a DecisionOut by hand (tests).
    risk: float | None = None

    @property
    def group(self) -> Group:
        """What a training example scored at ``ts`` should carry, for uplift."""
        return "none" if self.outcome == "suppressed" else self.outcome


class Policy:
    """Tiers, spike detection against the user's own baseline, hysteresis, cooldown,
    per-user cap, partition budget, circuit breaker, holdout and action choice.

    Call :meth:`decide` after every score, with the user's row and the partition's guard.
    Holdout users go through exactly the same state machine and limits as treated ones
    (only the send differs), so the holdout stays a random sample of the flagged.
    """

    def __init__(self, config: PolicyConfig, space: FeatureSpace, horizon: float) -> None:
        self.config = config
        self.version = config.version
        self._view = ViewBuilder(space)
        self._space = space
        self._horizon_days = horizon / DAY  # the label's horizon: what p is the chance of
        # The bandit's counts in use: the latest model snapshot's (use_posterior), shared
        # by every worker; the bandit chooser reads them, the rules keep them for the gauge.
        self.posterior = Posterior()
        self.chooser: Chooser = build_chooser(config, self.posterior)

    def use_posterior(self, posterior: Posterior) -> None:
        """Choose with these counts from now on (a model snapshot's: the learner learned
        them from the stream's treated examples), never with counts of this process's own."""
        self.posterior = posterior
        if isinstance(self.chooser, ThompsonChooser):
            self.chooser.posterior = posterior

    def bandit_means(self) -> list[tuple[str, str, float]]:
        """(segment, action, posterior mean retention) for every counted cell, prior
        included without the rules' bonus (which depends on the user), and ``("prior",
        action, prior mean)``: the mean of any segment that has no outcome yet."""
        b = self.config.bandit
        k, m = b.prior_strength, b.prior_mean
        out = [("prior", action, m) for action in ACTIONS]
        for segment, cells in sorted(self.posterior.counts.items()):
            for action, (stayed, churned) in sorted(cells.items()):
                out.append((segment, action, (k * m + stayed) / (k + stayed + churned)))
        return out

    def new_guard(self, partitions: int = 1) -> PartitionGuard:
        """A partition's guard; the budget is split evenly (users hash evenly over them)."""
        c = self.config
        return PartitionGuard(
            budget=max(1, math.ceil(c.limits.budget / partitions)),
            budget_window=c.limits.budget_window,
            breaker_window=c.breaker.window,
            open_share=c.breaker.open_share,
            close_share=c.breaker.close_share,
            min_scored=c.breaker.min_scored,
        )

    def risk(self, state: UserState, p: float) -> float:
        """What the thresholds judge (``spike.risk``). ``left``: p is the chance of no
        session within the horizon, and a loyal user who keeps their recent session rate
        r has none with chance ``quiet = exp(-r * horizon)``; the chance the user has left
        is then ``(p - quiet) / (1 - quiet)``. It discounts the light user whose silence is
        ordinary for them (docs/policy.md, *Risk*); a user with no recent session has 0."""
        if self.config.spike.risk == "p" or not math.isfinite(p):
            return p
        quiet = math.exp(-self._space.session_rate(state) * self._horizon_days)
        if quiet >= 1.0:
            return 0.0
        return min(1.0, max(0.0, (p - quiet) / (1.0 - quiet)))

    def tier(self, p: float) -> int:
        return self.config.tiers.of(p)

    def in_holdout(self, user_id: str) -> bool:
        return in_holdout(user_id, self.config.holdout.share, self.config.holdout.salt)

    def trains_on(self, group: Group) -> bool:
        """Whether a resolved example of this group should go to the learner."""
        return self.config.train_on_treated or group != "treatment"

    def decide(
        self, state: UserState, score: ScoreLike, scorer: Scorer, guard: PartitionGuard
    ) -> DecisionOut | None:
        """Update the user's policy state with this score; a DecisionOut when it spiked
        while armed (sent, held out, or suppressed by a limit), else None."""
        c = self.config
        if not c.enabled:
            return None
        s = c.spike
        mine = UserPolicy.load(state.extra)
        p, at = self.risk(state, score.p), score.ts
        tier = self.tier(p)
        left = s.risk == "left"
        if left != (SCALE_KEY in state.extra):
            if mine.baseline is not None:
                mine.restart_on(p, tier, at)  # no rise across scales: not a spike
            if left:
                state.extra[SCALE_KEY] = 1
            else:
                del state.extra[SCALE_KEY]
        baseline, prev_p, prev_tier = mine.baseline, mine.prev_p, mine.prev_tier
        jumped = baseline is not None and p - baseline >= s.jump
        entry = s.entry if scorer.ready else s.prior_entry
        spiked = p >= entry and (jumped or (s.tier_increase and tier > prev_tier))
        if not mine.armed and p < s.rearm_below:
            mine.armed = True
        # The breaker counts each user at most once per window, armed or not: a broken
        # model shows as a burst of spikes among scored users, whatever the limits did.
        new_scored, new_flagged = mine.count(at, spiked, c.breaker.window)
        guard.observe(at, mine.counted_at, new_scored, new_flagged)
        mine.observe(p, tier, at, s.baseline_half_life)
        if not (spiked and mine.armed):
            mine.save(state.extra)
            return None
        suppressed = self._limit(mine, at, guard)
        holdout = self.in_holdout(score.user_id)
        outcome: Outcome
        if suppressed is None:
            # Flagged: the user waits to re-arm, and the limits count it, holdout or not.
            outcome = "holdout" if holdout else "treatment"
            mine.armed = False
            mine.record(at, c.limits.user_cap)
            guard.spend(at)
        else:
            outcome = "suppressed"  # still armed: may be flagged once the limit passes
        mine.save(state.extra)
        view = self._view(score.features)
        rules_action = choose_action(view, c.actions)
        trigger = score.trigger
        did = decision_id(score.user_id, trigger, at, self.version)
        # The segment on every flag (a few per thousand scores), whatever the chooser: the
        # known-answer evaluation replays the bandit over a rules run's decisions.
        top = state.top_categories(1) if "category" in c.bandit.segments else []
        segment = segment_of(c, TIERS[tier], view, top[0] if top else None)
        action: Action = rules_action
        if c.chooser == "bandit":
            # Holdout and suppressed decisions draw too: they carry what would have been sent.
            action = cast(Action, self.chooser.choose(segment, rules_action, did))
        return DecisionOut(
            decision_id=did,
            intervention_id=intervention_id(score.user_id, trigger, at, self.version)
            if outcome == "treatment"
            else None,
            user_id=score.user_id,
            ts=at,
            trigger=trigger,
            p=score.p,
            previous_p=prev_p,
            baseline=baseline,
            tier=TIERS[tier],
            previous_tier=TIERS[prev_tier],
            outcome=outcome,
            suppressed_by=suppressed,
            holdout=holdout,
            action=action,
            categories=categories_for(action, state, c.actions),
            reasons=scorer.reason_codes(score.features, c.reasons.k) if c.reasons.k else [],
            model_version=score.model_version,
            policy_version=self.version,
            segment=segment,
            rules_action=rules_action,
            risk=p,
        )

    def _limit(self, mine: UserPolicy, at: float, guard: PartitionGuard) -> Suppression | None:
        lim = self.config.limits
        if guard.breaker_open:
            return "breaker_open"
        if mine.sent and at - mine.sent[-1] < lim.cooldown:
            return "cooldown"
        if mine.sent_within(at, lim.user_window) >= lim.user_cap:
            return "user_cap"
        if guard.budget_left(at) <= 0:
            return "budget"
        return None


def build_chooser(config: PolicyConfig, posterior: Posterior | None = None) -> Chooser:
    """The policy file's chooser; the bandit's with ``posterior`` (None: a cold one)."""
    if config.chooser == "rules":
        return RulesChooser()
    b = config.bandit
    return ThompsonChooser(
        ACTIONS,
        prior_strength=b.prior_strength,
        prior_mean=b.prior_mean,
        rules_bonus=b.rules_bonus,
        floor=b.floor,
        costs=b.costs.model_dump(),
        posterior=posterior,
    )
