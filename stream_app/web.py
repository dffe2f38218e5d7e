"""HTTP views of a worker: /metrics, /health, /ready, /model and /users/{user_id}.

Faust's own /table/ and /router/ views are switched off in create_app: they answered for
any user without a token and leaked who is a customer. /users and /model need the bearer
token when one is set; /metrics, /health and /ready stay open for probes and scrapers and
carry no user data.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
from datetime import UTC, datetime
from typing import Any

import aiohttp
import faust

from stream_app.core.features import UserState
from stream_app.core.policy.config import Tiers
from stream_app.core.policy.decide import TIERS as TIER_NAMES
from stream_app.errors import ConfigError
from stream_app.kafka.send import partition_for
from stream_app.metrics import CONTENT_TYPE
from stream_app.settings import Settings
from stream_app.wiring import Deps

log = logging.getLogger(__name__)

ROUTED = "X-Churn-Routed"  # set on a request one worker forwards to another
# Risk tiers of /users when no policy runs (the policy's own defaults, core/policy/config.py).
DEFAULT_TIERS = Tiers()


def metrics_about(window: int) -> dict[str, str]:
    """What each /model metric is: which scores, on which labels. One name per number:
    each is also the gauge churn_model_<key>."""
    labels = f"on the learner's last {window} labels (live, prequential)"
    return {
        "challenger_auc": f"ROC AUC of the learned model {labels}",
        "prior_auc": f"ROC AUC of the cold-start prior (recency alone) {labels}",
        "rolling_auc": f"ROC AUC of the scores served (the prior or earlier models) {labels}",
        "rolling_logloss": f"log loss of the scores served {labels}",
    }


def risk_tier(p: float, tiers: Tiers = DEFAULT_TIERS) -> str:
    """The tier name of a risk, by the policy's thresholds (the ones its decisions use)."""
    return TIER_NAMES[tiers.of(p)]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name (or "" = every interface) may reach beyond loopback
        return False


def require_token_beyond_loopback(settings: Settings) -> bool:
    """Raise ConfigError when the API would listen beyond loopback without a token, unless
    STREAM_APP_API_ALLOW_OPEN says so; True when it will serve user data to anyone (the
    caller warns). Checked at worker start: anyone who reaches the port could otherwise
    read every user's risk."""
    if is_loopback(settings.web_host) or settings.api_token is not None:
        return False
    if settings.api_allow_open:
        return True
    raise ConfigError(
        f"STREAM_APP_WEB_HOST={settings.web_host!r} serves the HTTP API beyond loopback, "
        "where /users/{id} and /model would answer anyone: set STREAM_APP_API_TOKEN (e.g. "
        "to the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), "
        "or bind STREAM_APP_WEB_HOST=127.0.0.1, or (unsafe) set STREAM_APP_API_ALLOW_OPEN=true"
    )


def authorized(headers: Any, deps: Deps) -> bool:
    """True when no token is configured, or the request carries it as a bearer token."""
    token = deps.settings.api_token
    if token is None:
        return True
    given = headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.get_secret_value().encode()
    )


def model_view(deps: Deps) -> dict[str, Any]:
    """The model this worker scores with (the cold-start prior is version 0)."""
    scorer = deps.engine.scorer
    latest = deps.model.latest
    in_use = latest if latest is not None and latest.version == scorer.version else None
    if in_use is not None:
        weights, intercept = dict(in_use.weights), in_use.intercept
    else:
        prior = deps.engine.prior
        weights, intercept = prior.weights, prior.INTERCEPT
    return {
        "version": scorer.version,
        "ready": scorer.ready,
        "n_labels": latest.n_labels if latest is not None else 0,
        "feature_schema": deps.engine.space.schema,
        "metrics": dict(latest.metrics) if latest is not None else {},
        "metrics_about": metrics_about(deps.settings.rolling_window),
        "weights": weights,
        "intercept": intercept,
        "latest_snapshot_version": latest.version if latest is not None else None,
    }


def user_view(deps: Deps, state: UserState, partition: int) -> dict[str, Any]:
    """A user's risk as of the partition's stream time (never before their last event)."""
    engine = deps.engine
    at = state.last_ts
    clock = deps.score.clocks.get(partition)
    if clock is not None and clock.stream_time > at:
        at = clock.stream_time
    vec = state.vector(at, engine.space)
    scorer = engine.scorer
    p = scorer.score(vec)
    policy = engine.policy
    # What the policy's thresholds judge (docs/policy.md, "Risk"); p without a policy.
    risk = policy.risk(state, p) if policy is not None else p
    return {
        "user_id": state.user_id,
        "p": p,
        "risk": risk,
        "tier": risk_tier(risk, policy.config.tiers if policy is not None else DEFAULT_TIERS),
        # The shape of the reasons on retention.decisions and .interventions (schemas/
        # outputs.py Reason): one shape wherever a reason code is shown.
        "reasons": [{"name": name, "value": round(c, 6)} for name, c in scorer.reason_codes(vec)],
        "model_version": scorer.version,
        "as_of": _iso(at),
        "last_event_at": _iso(state.last_ts),
        "features": {
            n: v for n, v in zip(engine.space.names, vec, strict=True) if math.isfinite(v)
        },
    }


def _iso(ts: float) -> str | None:
    if not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def owner_url(app: Any, partition: int) -> str | None:
    """Web URL of the worker that owns ``partition`` of the users table, from the
    assignor's table metadata (shared by the group at every rebalance)."""
    for url, topics in app.router.table_metadata("users").items():
        for parts in topics.values():
            if partition in parts:
                return str(url)
    return None


def owns(app: Any, deps: Deps, partition: int) -> bool:
    topic = deps.settings.topic_clickstream
    return any(
        tp.topic == topic and tp.partition == partition for tp in app.assignor.assigned_actives()
    )


def register(app: faust.App, deps: Deps) -> None:
    metrics, settings = deps.metrics, deps.settings
    session: dict[str, aiohttp.ClientSession] = {}

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE.split(";")[0])

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(
            {
                "status": "ok",
                "model_version": deps.engine.scorer.version,
                "model_ready": deps.engine.scorer.ready,
                "learner": deps.learner.active,
                # clickstream partitions this worker owns (empty until the group assigns)
                "partitions": sorted(
                    tp.partition
                    for tp in app.assignor.assigned_actives()
                    if tp.topic == settings.topic_clickstream
                ),
            }
        )

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        model_loaded = deps.model_service.caught_up.is_set()
        body = {"ready": recovered and model_loaded, "tables_recovered": recovered}
        body["model_loaded"] = model_loaded
        return web.json(body, status=200 if body["ready"] else 503)

    def unauthorized(web: Any) -> Any:
        return web.json(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.page("/model")
    async def model(web: Any, request: Any) -> Any:
        # The weights are learned from users' behaviour: not for anyone who asks.
        if not authorized(request.headers, deps):
            return unauthorized(web)
        return web.json(model_view(deps))

    @app.page("/users/{user_id}")
    async def user(web: Any, request: Any, user_id: str) -> Any:
        if not authorized(request.headers, deps):
            return unauthorized(web)
        partition = partition_for(user_id.encode(), settings.topic_partitions)
        if owns(app, deps, partition):
            state = deps.cache.lookup(user_id)
            if state is None or "erased" in state.extra:  # (an erasure marker: no user)
                return web.json({"error": "unknown user", "user_id": user_id}, status=404)
            return web.json(user_view(deps, state, partition))
        url = owner_url(app, partition)
        if url is None or request.headers.get(ROUTED):
            return web.json(
                {"error": f"partition {partition} has no owner right now (rebalancing)"},
                status=503,
                headers={"Retry-After": "1"},
            )
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        headers = {ROUTED: "1"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        target = f"{url.rstrip('/')}/users/{user_id}"
        try:
            async with session["s"].get(target, headers=headers) as resp:
                return web.bytes(
                    await resp.read(), content_type="application/json", status=resp.status
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("routing /users to %s failed: %s", url, exc)
            return web.json({"error": f"owner {url} did not answer"}, status=502)

    async def close_session(app_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        if "s" in session:
            await session.pop("s").close()

    app.on_before_shutdown.connect(close_session)
