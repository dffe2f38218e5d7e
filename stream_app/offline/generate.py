"""Synthetic clickstream in the v1 contract, with a known answer.

Users have a latent engagement (sessions per day, heterogeneous), daily and weekly rhythm,
sessions with funnels (views -> cart -> checkout -> purchase), favourite categories and
prices. A share of users *churn*: from an onset day their engagement decays until they stop,
and before leaving they contact support, return and rate badly more often. The ground truth
(who churns, when) goes to a side file ``<out>.truth.jsonl``. Deterministic for a seed.

With ``treatment_effect`` Q > 0, each churner is *savable* with probability Q (a hash of seed
and user id, so the main stream of random draws is untouched), and a savable churner gets
a second future from the onset of churn: the activity they would have had if an
intervention saved them, tagged ``properties.treatment_path = "saved"``, while their churn
path is tagged ``"churn"`` (see :mod:`stream_app.offline.treatment` and docs/policy.md). The
saved path has its own random generator, event ids and session ids, so dropping it and the
tags gives back exactly the file generated without the option.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pydantic import TypeAdapter

from stream_app.core.action_effects import ActionEffects
from stream_app.offline.treatment import CHURN, SAVED, TAG

DAY = 86400
T = TypeVar("T")
CATEGORIES = (
    "electronics",
    "books",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "grocery",
    "garden",
    "music",
    "pets",
    "office",
)
# Share of sessions starting in each hour (UTC): quiet nights, lunch bump, evening peak.
HOUR_WEIGHTS = (
    1,
    0.6,
    0.4,
    0.3,
    0.3,
    0.5,
    1,
    2,
    3,
    3.5,
    3.5,
    4,
    4.5,
    4,
    3.5,
    3.5,
    4,
    5,
    6,
    7,
    7,
    6,
    4,
    2,
)
WEEKDAY_FACTOR = (0.9, 0.9, 0.95, 1.0, 1.1, 1.3, 1.25)  # Monday .. Sunday
# exp(N(0, 0.5)) quantiles: a table lookup instead of rng.gauss for per-item price noise.
_PRICE_NOISE = tuple(
    math.exp(0.5 * statistics.NormalDist().inv_cdf((i + 0.5) / 4096)) for i in range(4096)
)
_HMS = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
CHURN_TAG = f',"properties":{{"{TAG}":"{CHURN}"}}'
SAVED_TAG = f',"properties":{{"{TAG}":"{SAVED}"}}'
# A saved user comes back at their old rate, and at least weekly: the intervention worked.
# (At the weekly floor, no session within a 30-day horizon has probability about 1.4%.)
SAVED_MIN_RATE = 1.0 / 7.0


@dataclass
class User:
    uid: str
    start_day: int
    rate: float
    buyer: float
    price_level: float
    favourites: tuple[str, ...]
    churner: bool
    onset: float
    decay: float
    last_ts: int = -1
    purchases: int = 0
    sessions: int = 0
    tag: str = ""  # appended to every event: "" or a treatment_path properties fragment
    session_prefix: str = "s"


@dataclass
class _Twin:
    """The saved future of a savable churner, with its own draws and ids."""

    user: User
    rng: random.Random
    id_prefix: str
    counter: int = 0


def savable_draw(seed: int, uid: str) -> float:
    """Uniform in [0, 1) from (seed, user id): whether a churner can be saved, drawn
    without touching the generator's random stream."""
    digest = hashlib.blake2b(f"{seed}:{uid}:saved".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _randint(rng: random.Random, lo: int, hi: int) -> int:
    """rng.randint without its Python-level argument checks (a third of the run time)."""
    return lo + int(rng.random() * (hi - lo + 1))


def _choice(rng: random.Random, seq: tuple[T, ...]) -> T:
    return seq[int(rng.random() * len(seq))]


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method; lam is small here (sessions per day).
    threshold = math.exp(-lam)
    k, p = 0, rng.random()
    while p > threshold:
        k += 1
        p *= rng.random()
    return k


class Generator:
    def __init__(
        self,
        users: int,
        days: int,
        seed: int,
        start: datetime,
        malformed: float = 0.0,
        duplicates: float = 0.0,
        treatment_effect: float = 0.0,
        action_effects: ActionEffects | None = None,
    ) -> None:
        if users < 1 or days < 1:
            raise ValueError("users and days must be >= 1")
        if not 0.0 <= treatment_effect <= 1.0:
            raise ValueError("treatment_effect is a probability in [0, 1]")
        if action_effects is not None:
            if treatment_effect:
                raise ValueError("give a treatment_effect or action_effects, not both")
            # Candidates: churners some action could save; each one's segment (and so the
            # actions that save them) is settled at the onset of their churn.
            treatment_effect = action_effects.ceiling
        self.action_effects = action_effects
        self.saved_by: dict[str, list[str]] = {}
        self.save_segment: dict[str, str] = {}
        self.rng = random.Random(seed)
        self.seed = seed
        self.days = days
        self.start = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.start_epoch = int(self.start.timestamp())
        self.malformed = malformed
        self.duplicates = duplicates
        self.counter = 0
        self._id_prefix = f'{{"event_id":"g{seed:x}-'
        self.users = [self._user(i) for i in range(users)]
        self.treatment_effect = treatment_effect
        self.savable = {
            u.uid for u in self.users if u.churner and savable_draw(seed, u.uid) < treatment_effect
        }
        self._twins: dict[str, _Twin] = {}
        cum, acc = [], 0.0
        for w in HOUR_WEIGHTS:
            acc += w
            cum.append(acc)
        self.hour_cum = cum
        self.day_prefix = [
            (self.start + timedelta(days=d)).strftime("%Y-%m-%dT") for d in range(days + 3)
        ]

    def _user(self, i: int) -> User:
        r = self.rng
        start_day = 0 if r.random() < 0.5 else int(r.random() * self.days * 0.7)
        rate = min(3.0, max(0.03, math.exp(r.gauss(math.log(0.3), 0.8))))
        churner = r.random() < 0.45
        # Users present on day 0 have a history before the window: they may start leaving
        # at once. New users stay at least a week.
        first = 0 if start_day == 0 else start_day + 7
        onset = first + r.random() * max(1.0, self.days + 30 - first)
        return User(
            uid=f"u{i:06d}",
            start_day=start_day,
            rate=rate,
            buyer=r.betavariate(2, 5),
            price_level=math.exp(r.gauss(3.3, 0.7)),
            favourites=tuple(r.sample(CATEGORIES, 3)),
            churner=churner,
            onset=onset if churner else math.inf,
            decay=3 + r.random() * 12,
        )

    def _event(self, u: User, etype: str, t: int, sid: str, extra: str = "") -> str:
        self.counter += 1
        day, sec = divmod(t - self.start_epoch, DAY)
        return (
            f'{self._id_prefix}{self.counter:x}","user_id":"{u.uid}","event_type":"{etype}",'
            f'"ts":"{self.day_prefix[day]}{_HMS[sec]}Z","session_id":"{sid}"{extra}{u.tag}}}'
        )

    def _session(self, u: User, t: int, day: float, out: list[tuple[int, str]]) -> None:
        r = self.rng
        u.sessions += 1
        sid = f"{u.uid}-{u.session_prefix}{u.sessions}"
        leaving = u.churner and day >= u.onset
        ev = self._event
        out.append((t, ev(u, "session_start", t, sid)))
        if r.random() < 0.2:
            t += _randint(r, 5, 60)
            q = _choice(r, u.favourites)
            out.append((t, ev(u, "search", t, sid, f',"query":"{q} deals"')))
        n_views = 1 + int(-math.log(1.0 - r.random()) * (4.0 if not leaving else 2.5))
        cart: list[tuple[str, float]] = []
        # The hot loop (most events are views): random draws inlined, not via helpers.
        rnd = r.random
        favs, n_favs = u.favourites, len(u.favourites)
        for _ in range(n_views):
            t += 8 + int(rnd() * 113)
            if rnd() < 0.75:
                cat = favs[int(rnd() * n_favs)]
            else:
                cat = CATEGORIES[int(rnd() * len(CATEGORIES))]
            if rnd() < 0.3:
                out.append((t, ev(u, "page_view", t, sid, f',"category":"{cat}"')))
                continue
            price = round(u.price_level * _PRICE_NOISE[int(rnd() * len(_PRICE_NOISE))], 2)
            pid = f"p{1 + int(rnd() * 5000)}"
            item = f',"product_id":"{pid}","category":"{cat}","price":{price}'
            out.append((t, ev(u, "product_view", t, sid, item)))
            if rnd() < 0.18:
                t += 5 + int(rnd() * 36)
                out.append((t, ev(u, "add_to_cart", t, sid, item + ',"quantity":1')))
                cart.append((cat, price))
                if rnd() < (0.1 if not leaving else 0.3):
                    t += 5 + int(rnd() * 56)
                    out.append((t, ev(u, "remove_from_cart", t, sid, f',"product_id":"{pid}"')))
                    cart.pop()
        if cart and r.random() < 0.55:
            t += _randint(r, 20, 200)
            out.append((t, ev(u, "checkout_start", t, sid)))
            if r.random() < 0.3 + 0.6 * u.buyer:
                t += _randint(r, 30, 300)
                total = round(sum(p for _, p in cart), 2)
                out.append((t, ev(u, "purchase", t, sid, f',"revenue":{total}')))
                u.purchases += 1
        if u.purchases and r.random() < 0.06:
            t += _randint(r, 10, 100)
            rating = _choice(r, (1, 2, 2, 3)) if leaving else _choice(r, (3, 4, 4, 5, 5))
            out.append((t, ev(u, "review", t, sid, f',"rating":{rating}')))
        if u.purchases and r.random() < (0.15 if leaving else 0.03):
            t += _randint(r, 10, 100)
            val = round(u.price_level * _choice(r, _PRICE_NOISE), 2)
            out.append((t, ev(u, "return", t, sid, f',"revenue":{val}')))
        if r.random() < (0.15 if leaving else 0.02):
            t += _randint(r, 10, 100)
            out.append((t, ev(u, "support_contact", t, sid)))
        u.last_ts = max(u.last_ts, t)

    def _corrupt(self, line: str) -> str:
        r = self.rng
        kind = int(r.random() * 8)
        if kind == 0:
            return line[: _randint(r, 1, max(1, len(line) - 2))]  # truncated JSON
        if kind == 1:
            return line.replace('"event_type":', '"type":', 1)  # missing field
        if kind == 2:
            return line.replace('Z"', '"', 1)  # naive timestamp
        if kind == 3:
            return line.replace('"event_type":"', '"event_type":"x_', 1)  # unknown type
        if kind == 4:
            return line[:-1] + ',"price":NaN}'  # non-finite number
        if kind == 5:
            return "[" + line + "]"  # not an object
        if kind == 6:
            return line.replace('"user_id":"', '"user_id":"\\u0007', 1)  # control char
        return line[:-1] + ',"v":2}'  # unsupported version

    def _saved_day(self, u: User, d: int, day_start: int, factor: float, out: list[Any]) -> None:
        """Day ``d`` of a savable churner's saved future (from the onset of churn on)."""
        twin = self._twins.get(u.uid)
        if twin is None:
            u.tag = CHURN_TAG  # from here on, the real user's events are the churn path
            saved = replace(
                u,
                churner=False,
                onset=math.inf,
                rate=max(u.rate, SAVED_MIN_RATE),
                tag=SAVED_TAG,
                session_prefix="t",
            )
            rng = random.Random(f"{self.seed}:{u.uid}:saved")  # str seeds hash with SHA-512
            twin = _Twin(saved, rng, f'{{"event_id":"g{self.seed:x}-t{u.uid}-')
            self._twins[u.uid] = twin
        # _session draws from self.rng and numbers events from self.counter: lend it the
        # twin's, so the main stream of draws and ids stays what it is without the option.
        main = self.rng, self.counter, self._id_prefix
        self.rng, self.counter, self._id_prefix = twin.rng, twin.counter, twin.id_prefix
        try:
            rnd = twin.rng.random
            for _ in range(_poisson(twin.rng, twin.user.rate * factor)):
                hour = _bisect(self.hour_cum, rnd() * self.hour_cum[-1])
                self._session(twin.user, day_start + hour * 3600 + int(rnd() * 3600), d, out)
        finally:
            twin.counter = self.counter
            self.rng, self.counter, self._id_prefix = main

    def _still_savable(self, u: User) -> bool:
        """With action effects: settle, at the onset of churn, which actions save ``u``."""
        effects = self.action_effects
        if effects is None or u.uid in self.saved_by:
            return True
        segment = "buyer" if u.purchases else "browser"
        self.save_segment[u.uid] = segment
        self.saved_by[u.uid] = effects.saved_by(segment, savable_draw(self.seed, u.uid))
        if not self.saved_by[u.uid]:
            self.savable.discard(u.uid)
            return False
        return True

    def run(self, fh: TextIO) -> dict[str, int]:
        r = self.rng
        carry: list[tuple[int, str]] = []
        written = malformed = dups = saved_lines = 0
        savable = self.savable
        saved_end = SAVED_TAG + "}" if savable else None
        for d in range(self.days):
            day_start = self.start_epoch + d * DAY
            factor = WEEKDAY_FACTOR[(self.start.weekday() + d) % 7]
            out = carry
            for u in self.users:
                if d < u.start_day:
                    continue
                lam = u.rate * factor
                if d >= u.onset:
                    if savable and u.uid in savable and self._still_savable(u):
                        self._saved_day(u, d, day_start, factor, out)
                    lam *= math.exp(-(d - u.onset) / u.decay)
                    if lam < 0.004:
                        continue
                for _ in range(_poisson(r, lam)):
                    hour = _bisect(self.hour_cum, r.random() * self.hour_cum[-1])
                    t = day_start + hour * 3600 + int(r.random() * 3600)
                    self._session(u, t, d, out)
            out.sort()
            end = day_start + DAY
            split = _first_at_or_after(out, end)
            lines = []
            for _t, line in out[:split]:
                if saved_end is not None and line.endswith(saved_end):
                    lines.append(line)  # no draws for the saved path: see the module doc
                    saved_lines += 1
                    continue
                if self.malformed and r.random() < self.malformed:
                    line = self._corrupt(line)
                    malformed += 1
                lines.append(line)
                if self.duplicates and r.random() < self.duplicates:
                    lines.append(line)
                    dups += 1
            fh.write("\n".join(lines) + ("\n" if lines else ""))
            written += len(lines)
            carry = out[split:]
        if carry:  # sessions that ran past the last midnight
            fh.write("\n".join(line for _t, line in carry) + "\n")
            written += len(carry)
            if saved_end is not None:
                saved_lines += sum(1 for _t, line in carry if line.endswith(saved_end))
        stats = {"lines": written, "malformed": malformed, "duplicates": dups}
        if self.treatment_effect:
            stats["saved_path_lines"] = saved_lines
        return stats

    def truth(self) -> list[dict[str, Any]]:
        end = self.start_epoch + self.days * DAY
        if self.action_effects is not None:
            for u in self.users:  # churn begins after the last day: settle them too
                if u.uid in self.savable:
                    self._still_savable(u)
        return [
            {
                "user_id": u.uid,
                "churner": u.churner,
                "churn_onset": _iso(self.start_epoch + u.onset * DAY)
                if u.churner and self.start_epoch + u.onset * DAY < end
                else None,
                "last_event": _iso(u.last_ts) if u.last_ts >= 0 else None,
                "sessions_per_day": round(u.rate, 4),
                "purchases": u.purchases,
                # Only with a treatment effect, so that files without one stay as they were.
                **({"saved_if_treated": u.uid in self.savable} if self.treatment_effect else {}),
                **(self._effects_truth(u) if self.action_effects is not None else {}),
            }
            for u in self.users
        ]

    def _effects_truth(self, u: User) -> dict[str, Any]:
        """The known answer of an action-effects file: which actions save the user."""
        saved_by = self.saved_by.get(u.uid, []) if u.uid in self.savable else []
        return {"saved_by": saved_by, "save_segment": self.save_segment.get(u.uid)}


def _bisect(cum: list[float], x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _first_at_or_after(items: list[tuple[int, str]], t: int) -> int:
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        if items[mid][0] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


def truth_path(out: Path) -> Path:
    return out.with_name(out.name + ".truth.jsonl")


def generate_cli(args: Any) -> int:
    from stream_app.errors import InputFileError

    try:
        start = TypeAdapter(datetime).validate_python(args.start)
    except ValueError:
        raise InputFileError(f"--start: not an RFC 3339 time: {args.start!r}") from None
    if start.tzinfo is None:
        raise InputFileError("--start needs an offset or Z")
    if not 0 <= args.malformed < 1 or not 0 <= args.duplicates < 1:
        raise InputFileError("--malformed and --duplicates are shares in [0, 1)")
    if not 0 <= args.treatment_effect <= 1:
        raise InputFileError("--treatment-effect is a probability in [0, 1]")
    effects = None
    if args.action_effects is not None:
        from stream_app.core.action_effects import load_action_effects

        if args.treatment_effect:
            raise InputFileError("give --treatment-effect or --action-effects, not both")
        effects = load_action_effects(args.action_effects)
    if args.users < 1 or args.days < 1:
        raise InputFileError("--users and --days must be at least 1")
    gen = Generator(
        args.users,
        args.days,
        args.seed,
        start,
        args.malformed,
        args.duplicates,
        args.treatment_effect,
        effects,
    )
    t0 = time.perf_counter()
    with args.out.open("w") as fh:
        stats = gen.run(fh)
    elapsed = time.perf_counter() - t0
    with truth_path(args.out).open("w") as fh:
        for row in gen.truth():
            fh.write(json.dumps(row) + "\n")
    stats_out = {
        **stats,
        "users": args.users,
        "days": args.days,
        "seed": args.seed,
        "seconds": round(elapsed, 3),
        "events_per_second": round(stats["lines"] / elapsed) if elapsed else None,
        "truth": str(truth_path(args.out)),
    }
    print(json.dumps(stats_out), file=sys.stdout)
    return 0
