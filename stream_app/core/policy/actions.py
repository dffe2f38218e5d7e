"""Action choice: ordered rules on what the user's features say about them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from stream_app.core.features import FeatureSpace, UserState, half_life_label
from stream_app.core.policy.config import Actions

Action = Literal["cart_reminder", "outreach", "coupon", "win_back", "recommendations"]


@dataclass(frozen=True, slots=True)
class UserView:
    """The few facts the rules read, from the scored feature vector."""

    cart_abandonment: float  # (carts added - purchases) / (carts added + 1), 30d decay
    revenue: float  # decayed revenue over the longest half-life, in currency units
    has_purchased: bool
    days_silent: float


class ViewBuilder:
    """Reads a UserView out of a feature vector; indices are looked up once per space."""

    def __init__(self, space: FeatureSpace) -> None:
        i = {n: k for k, n in enumerate(space.names)}
        self._cart = i["cart_abandonment"]
        self._revenue = i[f"revenue_{half_life_label(space.half_lives[-1])}"]
        self._buyer = i["has_purchased"]
        self._silent = i["days_since_last_event"]

    def __call__(self, vec: Sequence[float]) -> UserView:
        return UserView(
            cart_abandonment=vec[self._cart],
            revenue=math.expm1(vec[self._revenue]),  # features hold log1p of the sum
            has_purchased=vec[self._buyer] > 0.5,
            days_silent=vec[self._silent],
        )


def cart_abandoned(u: UserView, cfg: Actions) -> bool:
    return u.cart_abandonment >= cfg.cart_abandonment


def high_value(u: UserView, cfg: Actions) -> bool:
    return u.revenue >= cfg.high_value_revenue


def past_buyer(u: UserView, cfg: Actions) -> bool:
    return u.has_purchased


def silent(u: UserView, cfg: Actions) -> bool:
    return u.days_silent >= cfg.silent_days


Rule = Callable[[UserView, Actions], bool]
# First match wins: a forgotten cart is the most specific thing to act on, a valuable
# customer deserves a person before a discount, a buyer a coupon, a lapsed browser a
# win-back message; everyone else gets recommendations from their own categories.
RULES: tuple[tuple[Action, Rule], ...] = (
    ("cart_reminder", cart_abandoned),
    ("outreach", high_value),
    ("coupon", past_buyer),
    ("win_back", silent),
)


def choose_action(u: UserView, cfg: Actions) -> Action:
    for action, rule in RULES:
        if rule(u, cfg):
            return action
    return "recommendations"


def categories_for(action: Action, state: UserState, cfg: Actions) -> list[str]:
    """The user's top categories, sent with recommendations (empty for other actions)."""
    return state.top_categories(cfg.categories) if action == "recommendations" else []
