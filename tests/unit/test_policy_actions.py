"""Action choice: each rule alone, then their order, then what the decision carries."""

from __future__ import annotations

import math

from stream_app.core.policy.actions import (
    UserView,
    ViewBuilder,
    cart_abandoned,
    choose_action,
    high_value,
    past_buyer,
    silent,
)
from stream_app.core.policy.config import Actions
from tests.unit.policy_harness import SPACE, Harness, vector

CFG = Actions(cart_abandonment=0.3, high_value_revenue=500.0, silent_days=7.0)
NOBODY = UserView(cart_abandonment=0.0, revenue=0.0, has_purchased=False, days_silent=0.0)


def view(**kw: float | bool) -> UserView:
    fields = {
        "cart_abandonment": NOBODY.cart_abandonment,
        "revenue": NOBODY.revenue,
        "has_purchased": NOBODY.has_purchased,
        "days_silent": NOBODY.days_silent,
        **kw,
    }
    return UserView(**fields)  # type: ignore[arg-type]


def test_cart_abandoned_reads_the_cart_abandonment_feature() -> None:
    assert cart_abandoned(view(cart_abandonment=0.5), CFG)
    assert cart_abandoned(view(cart_abandonment=0.3), CFG)
    assert not cart_abandoned(view(cart_abandonment=0.29), CFG)
    assert not cart_abandoned(view(cart_abandonment=0.5), Actions(cart_abandonment=0.6))


def test_high_value_is_decayed_revenue_over_the_threshold() -> None:
    assert high_value(view(revenue=500.0), CFG)
    assert not high_value(view(revenue=499.0), CFG)
    assert high_value(view(revenue=120.0), Actions(high_value_revenue=100))


def test_past_buyer_is_anyone_who_ever_purchased() -> None:
    assert past_buyer(view(has_purchased=True), CFG)
    assert not past_buyer(NOBODY, CFG)


def test_silent_counts_days_since_the_last_event() -> None:
    assert silent(view(days_silent=7.0), CFG)
    assert not silent(view(days_silent=6.9), CFG)
    assert silent(view(days_silent=2.0), Actions(silent_days=1))


def test_the_first_matching_rule_wins_in_the_documented_order() -> None:
    everything = view(cart_abandonment=0.9, revenue=900.0, has_purchased=True, days_silent=30)
    assert choose_action(everything, CFG) == "cart_reminder"
    assert choose_action(view(revenue=900.0, has_purchased=True, days_silent=30), CFG) == (
        "outreach"
    )
    assert choose_action(view(has_purchased=True, days_silent=30), CFG) == "coupon"
    assert choose_action(view(days_silent=30), CFG) == "win_back"
    assert choose_action(NOBODY, CFG) == "recommendations"


def test_the_view_reads_the_right_features_and_undoes_log1p_on_revenue() -> None:
    vec = vector(
        cart_abandonment=0.4,
        revenue_30d=math.log1p(750.0),
        revenue_1d=math.log1p(5.0),
        has_purchased=1.0,
        days_since_last_event=12.5,
    )
    u = ViewBuilder(SPACE)(vec)
    assert u.cart_abandonment == 0.4 and u.has_purchased and u.days_silent == 12.5
    assert math.isclose(u.revenue, 750.0)


def test_recommendations_carry_the_users_top_categories() -> None:
    h = Harness()
    state = h.users.setdefault("u", SPACE.new_state("u"))
    state.categories.update({"books": 5.0, "garden": 9.0, "toys": 1.0, "music": 3.0})
    h.score("u", 0, 0.1)
    out = h.score("u", 1, 0.5)
    assert out is not None and out.action == "recommendations"
    assert out.categories == ["garden", "books", "music"]
    buyer = h.score("v", 1, 0.5, has_purchased=1.0, days_since_last_event=20.0)
    assert buyer is not None and buyer.action == "coupon" and buyer.categories == []
