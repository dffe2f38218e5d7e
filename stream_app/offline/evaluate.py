"""The offline driver: validate and evaluate JSONL files through the same core as the worker.

``evaluate`` replays a file in event-time order through :class:`Engine` with one clock (as
one partition), feeds resolved labels to the :class:`Learner` in prequential order and
hot-swaps the scorer from the learner's snapshots, as the live deployment does.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import TypeAdapter

from stream_app.core.driver import prequential, step
from stream_app.core.engine import Engine, StepResult
from stream_app.core.features import UserState
from stream_app.core.labels import Label
from stream_app.core.learner import Learner, roc_auc
from stream_app.core.model import OnlineModel
from stream_app.core.policy import DecisionOut, decision_message
from stream_app.core.timers import PartitionClock
from stream_app.errors import InputFileError
from stream_app.ingest import Decoder
from stream_app.jsonl import iter_lines
from stream_app.offline.advice import no_labels_advice
from stream_app.offline.early_warning import Flag, early_warning_for
from stream_app.offline.generate import truth_path
from stream_app.offline.known_answer import Outcome, known_answer, load_truth
from stream_app.offline.known_answer import summary as known_summary
from stream_app.offline.treatment import TreatmentSimulator, path_of
from stream_app.settings import Settings, load_settings
from stream_app.wiring import build_engine

_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def validate_file(path: Path, err: IO[str]) -> dict[str, Any]:
    """One line per bad record on ``err``; returns the summary printed on stdout."""
    settings = load_settings()
    decoder = Decoder.from_settings(settings)
    valid = invalid = 0
    reasons: Counter[str] = Counter()
    for n, raw in iter_lines(path):
        decoded = decoder.decode(raw)
        if decoded.rejection is None:
            valid += 1
            continue
        invalid += 1
        r = decoded.rejection
        reasons[r.reason] += 1
        err.write(f"{path}:{n}: {r.reason}: field={r.field or '-'}: {r.detail}\n")
    return {"valid": valid, "invalid": invalid, "reasons": dict(sorted(reasons.items()))}


@dataclass
class EvaluateOptions:
    predictions_out: Path | None = None
    scores_at: float | None = None
    scores_out: Path | None = None
    report_dir: Path | None = None
    progress: IO[str] | None = None
    progress_every: int = 200_000
    keep_labels: bool = False  # keep every resolved Label (features included) in the run
    decisions_out: Path | None = None  # every policy decision, one Decision JSON a line


@dataclass
class EvaluationRun:
    """Everything an evaluation produced; ``summary`` is the JSON line printed."""

    summary: dict[str, Any]
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    recency: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    resolved: list[Label] = field(default_factory=list)  # only with keep_labels
    # (resolved_at, group, label) of every example of a flagged user, for the uplift plot.
    flagged: list[tuple[float, str, int]] = field(default_factory=list)
    decisions: DecisionLog = field(default_factory=lambda: DecisionLog())
    known_answer: dict[str, Outcome] | None = None  # choosers on an action-effects file


class _Unsorted(Exception):
    """The file is not in event-time order beyond the reorder buffer."""


def _streamed(path: Path, decoder: Decoder, invalid: Counter[str]) -> Iterator[tuple[float, Any]]:
    """Events of a file already in event-time order, decoding each line once. Raises
    _Unsorted at the first event older than one before it."""
    newest = -math.inf
    for _, raw in iter_lines(path):
        d = decoder.decode(raw)
        if d.event is None:
            assert d.rejection is not None
            invalid[d.rejection.reason] += 1
            continue
        ts = d.ts
        if ts < newest:
            raise _Unsorted
        newest = ts
        yield ts, d.event


def _sorted(path: Path, decoder: Decoder, invalid: Counter[str]) -> Iterator[tuple[float, Any]]:
    """Events of an unordered file: one pass to find each valid line's time and offset,
    a sort, then a second pass that reads and decodes the lines in time order."""
    index: list[tuple[float, int, int]] = []
    with path.open("rb") as fh:
        n = 0
        while True:
            pos = fh.tell()
            line = fh.readline()
            if not line:
                break
            n += 1
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            d = decoder.decode(raw)
            if d.event is None:
                assert d.rejection is not None
                invalid[d.rejection.reason] += 1
            else:
                index.append((d.ts, n, pos))
        index.sort()
        for ts, _, pos in index:
            fh.seek(pos)
            d = decoder.decode(fh.readline().rstrip(b"\r\n"))
            yield ts, d.event


def evaluate(path: Path, settings: Settings, options: EvaluateOptions) -> EvaluationRun:
    """Replay ``path`` in event-time order. A file already in time order is streamed,
    decoding each line once; any other order is detected and costs a sort and a second
    pass (the results are the same)."""
    if not path.is_file():
        raise InputFileError(f"cannot read {path}: no such file")
    old = gc.get_threshold()
    # Millions of short-lived objects and no reference cycles in the hot path: the default
    # gen-0 threshold made the cyclic GC take a fifth of the run.
    gc.set_threshold(100_000, 50, 100)
    try:
        try:
            return _evaluate(path, settings, options, ordered=False)
        except _Unsorted:
            if options.progress:
                options.progress.write("evaluate: file is not in time order; sorting it\n")
            return _evaluate(path, settings, options, ordered=True)
    finally:
        gc.set_threshold(*old)


@dataclass
class _Counts:
    total: int = 0
    applied: int = 0
    duplicates: int = 0
    scores: int = 0
    simulated_out: int = 0  # events of a future the treatment simulation did not take
    first_ts: float | None = None  # event time of the file's first and last valid event
    last_ts: float | None = None


@dataclass
class DecisionLog:
    """What the policy did over a replay: counters for the summary, a compact timeline
    (event time, action, outcome) for the report, and the file of every decision."""

    outcomes: Counter[str] = field(default_factory=Counter)
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, outcome)
    suppressed: Counter[str] = field(default_factory=Counter)
    breaker_opened: int = 0
    users_treated: set[str] = field(default_factory=set)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    treatments: list[DecisionOut] = field(default_factory=list)  # for the known answer
    flags: list[Flag] = field(default_factory=list)  # (user, time, outcome): early warning


class Replay:
    """One replay of a file through the engine and the learner. Iterating it yields every
    resolved label in prequential order (each one already used to evaluate, then to learn);
    the state it leaves (store, learner, counts) makes the summary."""

    def __init__(
        self, path: Path, settings: Settings, options: EvaluateOptions, ordered: bool
    ) -> None:
        self.path = path
        self.settings = settings
        self.options = options
        self.ordered = ordered
        self.engine = build_engine(settings)
        self.decisions = DecisionLog()
        self.truth = load_truth(truth_path(path))  # an action-effects file's known answer
        self.simulator = TreatmentSimulator(self.truth.saved_by if self.truth else None)
        self.model = OnlineModel.from_config(
            self.engine.space.names, self.engine.space.schema, settings.as_model_config()
        )
        lcfg = settings.as_learner_config()
        self.learner = Learner(
            self.model,
            lcfg.snapshot_every,
            lcfg.rolling_window,
            example_dedup=0,
            train_on_treated=self.engine.train_on_treated,
        )
        self.store: dict[str, UserState] = {}
        self.invalid: Counter[str] = Counter()
        self.counts = _Counts()
        self.span = (math.nan, math.nan)  # first and last event time, once replayed

    def __iter__(self) -> Iterator[Label]:
        engine, learner, store, counts = self.engine, self.learner, self.store, self.counts
        options = self.options
        decoder = Decoder.from_settings(self.settings)
        read = _sorted if self.ordered else _streamed
        clock = engine.new_clock()
        scores_at = options.scores_at
        exported = False
        first = True
        progress = options.progress
        t0 = time.perf_counter()
        sim = self.simulator
        out = options.decisions_out.open("w") if options.decisions_out else None
        try:
            for ts, event in read(self.path, decoder, self.invalid):
                if first:
                    engine.labels_from = ts + self.settings.eval_warmup
                    counts.first_ts = ts
                    first = False
                counts.total += 1
                if scores_at is not None and not exported and ts >= scores_at:
                    _export_scores(engine, store, scores_at, options.scores_out)
                    exported = True
                if path_of(event) is not None:
                    # A generated file with a treatment effect: the user's deadlines before
                    # this event decide (through their interventions) which future it is.
                    early = engine.catch_up(store, clock, event.user_id, ts)
                    if early is not None:
                        yield from self._step(early, clock, out)
                    if not sim.keep_event(event, ts):
                        counts.simulated_out += 1
                        continue
                results = step(engine, store, clock, event, ts)
                res = next(results)
                if res.status == "duplicate":
                    counts.duplicates += 1
                else:
                    counts.applied += 1
                    # The event's labels are learned before the timer sweep scores anyone
                    # (step() computes the sweep only when asked for it): a snapshot they
                    # complete changes the model the sweep scores with.
                    yield from self._step(res, clock, out)
                    for due in results:
                        yield from self._step(due, clock, out)
                if progress is not None and counts.total % options.progress_every == 0:
                    rate = counts.total / (time.perf_counter() - t0)
                    progress.write(
                        f"evaluate: {counts.total} events, {learner.n} labels, "
                        f"{rate:,.0f} events/s\n"
                    )
            if scores_at is not None and not exported:
                _export_scores(engine, store, scores_at, options.scores_out)
            counts.last_ts = None if first else clock.stream_time
            self.span = (engine.labels_from - self.settings.eval_warmup, clock.stream_time)
        finally:
            if out is not None:
                out.close()

    def _step(self, res: StepResult, clock: PartitionClock, out: IO[str] | None) -> Iterator[Label]:
        """Record a step's decisions, then evaluate-then-learn its labels (a completed
        snapshot swaps the engine's model)."""
        self.counts.scores += len(res.scores)
        if res.decisions:
            self._decided(res.decisions, out)
        guard = clock.guard
        if guard is not None and (change := guard.pop_change()) is not None:
            self.decisions.breaker_opened += change.opened
        yield from prequential(self.engine, self.learner, res)

    def _decided(self, decisions: list[DecisionOut], out: IO[str] | None) -> None:
        log = self.decisions
        for d in decisions:
            log.outcomes[d.outcome] += 1
            log.timeline.append((d.ts, d.action, d.outcome))
            log.flags.append(Flag(d.user_id, d.ts, d.outcome))
            if d.suppressed_by is not None:
                log.suppressed[d.suppressed_by] += 1
            else:
                log.actions[d.action, d.outcome] += 1
            if d.outcome == "treatment":
                log.users_treated.add(d.user_id)
                if self.truth is not None:
                    log.treatments.append(d)
                self.simulator.treated(d.user_id, d.ts, d.action)
            if out is not None:
                out.write(decision_message(d).model_dump_json() + "\n")


def _evaluate(
    path: Path, settings: Settings, options: EvaluateOptions, ordered: bool
) -> EvaluationRun:
    t0 = time.perf_counter()
    replay = Replay(path, settings, options, ordered)
    run = EvaluationRun(summary={})
    pred_fh = options.predictions_out.open("w") if options.predictions_out else None
    try:
        for lab in replay:
            run.labels.append(lab.label)
            run.scores.append(lab.p)
            run.recency.append(lab.features.get("days_since_last_event", 0.0))
            run.versions.append(lab.model_version)
            if lab.group != "none":
                run.flagged.append((lab.resolved_at, lab.group, lab.label))
            if options.keep_labels:
                run.resolved.append(lab)
            if pred_fh is not None:
                pred_fh.write(
                    json.dumps(
                        {
                            "user_id": lab.user_id,
                            "ts": _iso(lab.scored_at),
                            "p": lab.p,
                            "label": lab.label,
                        }
                    )
                    + "\n"
                )
    finally:
        if pred_fh is not None:
            pred_fh.close()
    elapsed = time.perf_counter() - t0
    run.decisions = replay.decisions

    counts, invalid, model = replay.counts, replay.invalid, replay.model
    summary = replay.learner.summary()
    run.summary = {
        "events": counts.applied,
        "users": len(replay.store),
        "labels": len(run.labels),
        "positives": sum(run.labels),
        "auc": _round(roc_auc(run.labels, run.scores)),
        "logloss": _round(summary["logloss"]),
        "events_per_second": round(counts.total / elapsed) if elapsed > 0 else None,
        "auc_recency": _round(roc_auc(run.labels, run.recency)),
        # The same comparison on the labels whose p came from the learned model (not the
        # cold-start prior): the steady state a long-running deployment lives in.
        **_learned_aucs(run),
        "rolling_auc": _round(summary["rolling_auc"]),
        "drifts": int(summary["drifts"]),
        "invalid": sum(invalid.values()),
        "invalid_reasons": dict(sorted(invalid.items())),
        "duplicates": counts.duplicates,
        "scores": counts.scores,
        "model_version": model.version,
        "model_ready": model.ready,
        **_policy_summary(replay),
        **_known_answer(replay, run),
        "early_warning": early_warning_for(path, replay.decisions.flags, *replay.span),
        "memory_per_user_bytes": memory_per_user(replay.store),
        "sorted_input": not ordered,
        **_event_span(counts.first_ts, counts.last_ts),
        "seconds": round(elapsed, 3),
    }
    return run


def _policy_summary(replay: Replay) -> dict[str, Any]:
    log, policy = replay.decisions, replay.engine.policy
    u = replay.learner.uplift()
    return {
        "policy_version": policy.version if policy is not None else None,
        "interventions": log.outcomes["treatment"],
        "holdout_decisions": log.outcomes["holdout"],
        "suppressed": dict(sorted(log.suppressed.items())),
        "budget_exhausted": log.suppressed["budget"],
        "breaker_opened": log.breaker_opened,
        # Labelled: "interventions" counts only the sent ones, the control group is apart.
        "interventions_by_action": {
            a: {"sent": log.actions[a, "treatment"], "held_out": log.actions[a, "holdout"]}
            for a in sorted({a for a, _ in log.actions})
        },
        "users_treated": len(log.users_treated),
        "uplift": {
            "uplift": _round(u.uplift),
            "low": _round(u.uplift_low),
            "high": _round(u.uplift_high),
            "reduction": _round(u.reduction),
            "reduction_low": _round(u.reduction_low),
            "reduction_high": _round(u.reduction_high),
            "holdout_n": u.holdout_n,
            "holdout_churned": u.holdout_churned,
            "treated_n": u.treated_n,
            "treated_churned": u.treated_churned,
        },
        "simulated_out": replay.counts.simulated_out,
    }


def _known_answer(replay: Replay, run: EvaluationRun) -> dict[str, Any]:
    policy = replay.engine.policy
    if replay.truth is None or policy is None:
        return {}
    log = replay.decisions
    run.known_answer = known_answer(
        log.treatments, replay.truth, policy.config, replay.settings.horizon
    )
    return {"known_answer": known_summary(run.known_answer, len(replay.simulator.treated_at))}


def _learned_aucs(run: EvaluationRun) -> dict[str, float | None]:
    idx = [i for i, v in enumerate(run.versions) if v > 0]
    labels = [run.labels[i] for i in idx]
    return {
        "labels_learned": len(idx),
        "auc_learned": _round(roc_auc(labels, [run.scores[i] for i in idx])),
        "auc_recency_learned": _round(roc_auc(labels, [run.recency[i] for i in idx])),
    }


def _export_scores(
    engine: Engine, store: dict[str, UserState], at: float, out: Path | None
) -> None:
    """The CRM audience export: every user seen before ``at``, scored as of ``at``."""
    if out is None:
        return
    with out.open("w") as fh:
        for uid in sorted(store):
            p, codes = engine.score_now(store[uid], at)
            reasons = [{"name": n, "value": round(v, 6)} for n, v in codes]  # as on Kafka
            fh.write(json.dumps({"user_id": uid, "p": p, "reasons": reasons}) + "\n")


def memory_per_user(store: dict[str, UserState], sample: int = 500) -> int | None:
    """Mean deep size in bytes of a sample of user states (Python object overhead included)."""
    if not store:
        return None
    users = list(store.values())
    step = max(1, len(users) // sample)
    picked = users[::step][:sample]
    return round(sum(deep_sizeof(u) for u in picked) / len(picked))


def deep_sizeof(obj: object, seen: set[int] | None = None) -> int:
    """sys.getsizeof of an object and everything it holds (containers and __slots__)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            size += deep_sizeof(k, seen) + deep_sizeof(v, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            size += deep_sizeof(v, seen)
    elif hasattr(obj, "__slots__"):
        for name in obj.__slots__:
            if hasattr(obj, name):
                size += deep_sizeof(getattr(obj, name), seen)
    return size


def _event_span(first: float | None, last: float | None) -> dict[str, Any]:
    """The file's first and last valid event time, and the days between them."""
    if first is None or last is None:
        return {"first_event": None, "last_event": None, "span_days": None}
    return {
        "first_event": _iso(first),
        "last_event": _iso(last),
        "span_days": round((last - first) / 86400, 3),
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _round(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else round(v, 6)


def parse_time(text: str) -> float:
    try:
        dt = _DATETIME.validate_python(text)
    except ValueError:
        raise InputFileError(f"--scores-at: not an RFC 3339 time: {text!r}") from None
    if dt.tzinfo is None:
        raise InputFileError(f"--scores-at needs an offset or Z: {text!r}")
    return dt.timestamp()


def evaluate_cli(args: Any) -> EvaluationRun:
    overrides: dict[str, object] = {}
    if args.horizon is not None:
        overrides["horizon"] = args.horizon
    if args.warmup is not None:
        overrides["eval_warmup"] = args.warmup
    settings = load_settings(**overrides)
    if args.scores_at and not args.scores_out:
        raise InputFileError("--scores-at needs --scores-out FILE")
    options = EvaluateOptions(
        predictions_out=args.predictions_out,
        scores_at=parse_time(args.scores_at) if args.scores_at else None,
        scores_out=args.scores_out,
        report_dir=args.report_dir,
        decisions_out=args.decisions_out,
        progress=None if args.quiet else sys.stderr,
    )
    run = evaluate(args.file, settings, options)
    print(json.dumps(run.summary), flush=True)
    if run.summary["labels"] == 0:  # say why, rather than a bare "auc": null
        days = run.summary["span_days"]
        why = no_labels_advice(
            None if days is None else days * 86400, settings.eval_warmup, settings.horizon
        )
        print(f"evaluate: {why or 'no labels'}", file=sys.stderr)
    return run
