"""`make demo`: the whole product in a minute or two, on this machine, with no Docker.

1. start a local Kafka (unless KAFKA_BOOTSTRAP_SERVERS names one) while generating two
   months of synthetic traffic for 2,000 users (a few broken lines included);
2. start `stream-app worker` (it scores, learns and emits interventions) and replay the
   traffic into it as fast as it goes: two months of event time in a minute or two;
3. while the worker catches up, evaluate the same file offline for the PNG report;
4. print a summary read from the worker (/metrics, /model, /users/<id>) and its topics;
   then stop every process it started, also on Ctrl-C.

The worker runs with the demo's settings (DEMO_SETTINGS); STREAM_APP_* variables in the
environment override them (the tests shorten the demo this way).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream_app.kafka.topics import read_to_end

ROOT = Path(__file__).resolve().parents[1]
STREAM_APP = [sys.executable, "-m", "stream_app.cli"]
START = "2026-01-05T00:00:00Z"  # fixed, so a seed gives the same file on any day
# Churn = no new session within 14 days: with two months of traffic that resolves labels
# early enough for the learned model to take over and be judged (the default is 30d).
DEMO_SETTINGS = {
    "STREAM_APP_HORIZON": "14d",
    "STREAM_APP_SNAPSHOT_MAX_INTERVAL": "5s",  # the last labels reach /model quickly
    "STREAM_APP_LOG_LEVEL": "info",
    # Ctrl-C stops everything within ~35 s at worst: the worker within 15 s (SIGKILL at 20 s)
    # and then the broker within 15 s; both usually take one or two seconds.
    "STREAM_APP_SHUTDOWN_TIMEOUT": "15s",
}
# Share of churners an intervention saves in the generated file. Only the offline report can
# simulate it (the replay cannot react to interventions); see the uplift lines.
TREATMENT_EFFECT = "0.5"


class DemoError(Exception):
    """Something the demo needs failed; the message says what and where to look."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: children are stopped


def _localkafka() -> ModuleType:
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "tools/kafka/localkafka.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def say(text: str = "") -> None:
    print(text, flush=True)


# --- the processes the demo starts ----------------------------------------------------


@dataclass
class Processes:
    """Everything started, so that every exit path stops it. Children run in their own
    session: a Ctrl-C reaches only the demo, which then stops them in order."""

    cluster: Any = None
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def spawn(
        self, name: str, args: list[str], env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.children.append((name, proc))
        return proc

    def stop(self, timeout: float = 20.0) -> list[str]:
        """SIGTERM to every child at once (each stops within its own bound: the worker's
        is STREAM_APP_SHUTDOWN_TIMEOUT, 15 s here), SIGKILL to those still up after
        ``timeout``; then the broker (SIGKILL after 15 s), last, so that the worker can
        still commit while it stops."""
        stopped = []
        t0 = time.monotonic()
        running = [(name, proc) for name, proc in reversed(self.children) if proc.poll() is None]
        for _, proc in running:
            proc.terminate()
        for name, proc in running:
            try:
                proc.wait(max(0.1, t0 + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stopped.append(f"{name} (pid {proc.pid}) in {time.monotonic() - t0:.1f} s")
        self.children.clear()
        if self.cluster is not None:
            t0 = time.monotonic()
            pids = [n.process.pid for n in self.cluster.nodes if n.process]
            self.cluster.stop(timeout=15.0)
            stopped.append(
                f"Kafka (pid {', '.join(map(str, pids))}) in {time.monotonic() - t0:.1f} s"
            )
            self.cluster = None
        return stopped


# --- reading the worker ---------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]


def http_get(port: int, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:  # noqa: S310
            return bytes(r.read())
    except (OSError, urllib.error.HTTPError):
        return None


def parse_metrics(text: str) -> Samples:
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def total(m: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def by_label(m: Samples, name: str, label: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for lab, v in m.get(name, []):
        out[lab.get(label, "")] += int(v)
    return out


def consumed(m: Samples) -> int:
    """Messages the worker finished with: applied, dead letters and duplicates."""
    names = ("churn_events_total", "churn_events_invalid_total", "churn_events_duplicate_total")
    return int(sum(total(m, n) for n in names))


# --- progress -------------------------------------------------------------------------


class Progress:
    """One line redrawn in place on a terminal; a line every ~10% otherwise (logs, CI)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_decile = -1
        self.rate = 0.0
        self._last: tuple[float, int] | None = None

    def update(self, done: int, total_: int, note: str) -> None:
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            inst = (done - self._last[1]) / (now - self._last[0])
            self.rate = inst if not self.rate else 0.7 * self.rate + 0.3 * inst
        self._last = (now, done)
        frac = min(1.0, done / total_) if total_ else 0.0
        eta = (total_ - done) / self.rate if self.rate > 0 and done < total_ else 0.0
        bar = "#" * int(frac * 24)
        line = (
            f"  [{bar:<24}] {frac:4.0%} {done:>9,}/{total_:,} msgs {self.rate:6,.0f}/s "
            f"eta {int(eta) // 60}:{int(eta) % 60:02d} | {note}"
        )
        if self.tty:  # cut to the terminal's width: a wrapped line cannot be redrawn
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
            self.stream.flush()
        elif int(frac * 10) > self.last_decile:
            self.last_decile = int(frac * 10)
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --- the demo -------------------------------------------------------------------------


@dataclass
class Run:
    out: Path
    env: dict[str, str]
    bootstrap: str
    topics: dict[str, str]
    port: int
    started: float = field(default_factory=time.monotonic)


def worker_env(bootstrap: str, out: Path, tag: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """The worker's environment and its topic names. On a broker of your own every name gets
    a run tag, so a demo never mixes with earlier runs or other apps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_APP_")}
    env.update(DEMO_SETTINGS)
    env.update({k: v for k, v in os.environ.items() if k.startswith("STREAM_APP_")})
    topics = {
        "clickstream": "clickstream",
        "dlq": "clickstream.dlq",
        "training": "churn.training",
        "model": "churn.model",
        "decisions": "retention.decisions",
        "interventions": "retention.interventions",
    }
    if tag:
        topics = {k: f"demo-{tag}.{v}" for k, v in topics.items()}
    env.update({f"STREAM_APP_TOPIC_{k.upper()}": v for k, v in topics.items()})
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_APP_APP_ID": f"demo-{tag}" if tag else "demo",
            "STREAM_APP_DATA_DIR": str(out / "worker-data"),
        }
    )
    return env, topics


def distinct_users(path: Path) -> int:
    pattern = re.compile(rb'"user_id":"([^"]+)"')
    users = set()
    with path.open("rb") as fh:
        for line in fh:
            if b'"treatment_path":"saved"' in line:
                continue
            m = pattern.search(line)
            if m:
                users.add(m.group(1))
    return len(users)


def wait_ready(procs: Processes, worker: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-30:]
            raise DemoError(
                f"the worker exited ({worker.returncode}); log {log}:\n" + "\n".join(tail)
            )
        if http_get(port, "/ready") is not None:
            return
        time.sleep(0.5)
    raise DemoError(f"the worker was not ready within 120 s; log: {log}")


def replay_live(
    procs: Processes, run: Run, events: Path, expected: int, stream: IO[str]
) -> tuple[int, subprocess.Popen[bytes] | None, Samples]:
    """Replay the file and follow the worker until it has taken every message; starts the
    offline evaluation once the replay has sent everything (it then uses the idle core)."""
    replay_log = run.out / "replay.log"
    replay = procs.spawn(
        "replay", [*STREAM_APP, "replay", str(events), "--send-invalid"], run.env, replay_log
    )
    evaluate: subprocess.Popen[bytes] | None = None
    sent: int | None = None
    bar = Progress(stream)
    last_change, last_done = time.monotonic(), -1
    m: Samples = {}
    try:
        while True:
            time.sleep(0.5)
            if sent is None and replay.poll() is not None:
                if replay.returncode != 0:
                    raise DemoError(f"replay failed; log: {replay_log}")
                lines = replay_log.read_text().strip().splitlines()
                sent = int(json.loads(lines[-1])["sent"])
                evaluate = start_evaluation(procs, run, events)
            text = http_get(run.port, "/metrics")
            if text is None:
                continue
            m = parse_metrics(text.decode())
            done = consumed(m)
            stream_time = max((v for _, v in m.get("churn_stream_time_seconds", [])), default=0)
            day = (
                datetime.fromtimestamp(stream_time, tz=UTC).strftime("%Y-%m-%d")
                if stream_time
                else "-"
            )
            note = (
                f"event time {day} | model v{int(total(m, 'churn_model_version'))} | "
                f"{int(total(m, 'churn_interventions_total')):,} interventions"
            )
            bar.update(done, sent or expected, note)
            if sent is not None and done >= sent:
                return sent, evaluate, m
            if done != last_done:
                last_change, last_done = time.monotonic(), done
            elif time.monotonic() - last_change > 90:
                raise DemoError(
                    f"the worker took no message for 90 s ({done:,} of {sent or expected:,}); "
                    f"log: {run.out / 'worker.log'}"
                )
    finally:
        bar.close()


def start_evaluation(procs: Processes, run: Run, events: Path) -> subprocess.Popen[bytes]:
    report = run.out / "report"
    # No warm-up: the live worker has none either, so both learn from the same labels.
    args = [*STREAM_APP, "evaluate", str(events), "--quiet", "--warmup", "0"]
    args += ["--report-dir", str(report)]
    proc = procs.spawn("evaluate", args, run.env, run.out / "evaluate.log")
    return proc


def settle_learner(run: Run, timeout: float = 60.0) -> None:
    """Wait until the learner has taken every training example, then for the snapshot that
    includes the last of them (published at most STREAM_APP_SNAPSHOT_MAX_INTERVAL after its
    last label) to reach this worker's scorer."""
    from stream_app.settings import parse_duration

    interval = parse_duration(run.env.get("STREAM_APP_SNAPSHOT_MAX_INTERVAL", "30s"))
    deadline = time.monotonic() + timeout
    caught_up: tuple[float, float] | None = None  # (when, snapshots published by then)
    while time.monotonic() < deadline:
        text, body = http_get(run.port, "/metrics"), http_get(run.port, "/model")
        if text is None or body is None:
            time.sleep(0.5)
            continue
        m = parse_metrics(text.decode())
        published = total(m, "churn_model_snapshots_published_total")
        if caught_up is None:
            examples = sum(end_offsets(run.bootstrap, run.topics["training"]))
            taken = total(m, "churn_model_labels_total") + total(m, "churn_training_skipped_total")
            if taken >= examples:
                caught_up = (time.monotonic(), published)
        else:
            newer = published > caught_up[1] or time.monotonic() - caught_up[0] > interval + 2
            if newer and (json.loads(body).get("latest_snapshot_version") or 0) >= published:
                return
        time.sleep(0.5)
    say(f"    the learner had not settled after {timeout:.0f} s; figures as they are")


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return list(consumer.end_offsets(tps).values()) if tps else []
    finally:
        consumer.close()


def flagged_user(run: Run) -> tuple[str, dict[str, Any]] | None:
    """The newest treated user on the interventions topic, and their /users view."""
    msgs = read_to_end(run.bootstrap, run.topics["interventions"])
    for msg in sorted(msgs, key=lambda x: x.timestamp, reverse=True)[:20]:
        user = json.loads(msg.value)["user_id"]
        body = http_get(run.port, f"/users/{user}")
        if body is not None:
            return user, {"intervention": json.loads(msg.value), "now": json.loads(body)}
    return None


# --- the summary ----------------------------------------------------------------------


def fmt_uplift(mid: float | None, low: float | None, high: float | None) -> str:
    if mid is None or low is None or high is None or mid != mid:  # None or NaN
        return "not measurable yet"
    return f"{mid:+.2f} [{low:+.2f}, {high:+.2f}]"


def rel(path: Path) -> str:
    with_slash = path.is_dir()
    try:
        text = str(path.relative_to(Path.cwd()))
    except ValueError:
        text = str(path)
    return text + ("/" if with_slash else "")


@dataclass
class Findings:
    """What the summary reports, gathered from the worker, its topics and the report."""

    metrics: Samples
    model: dict[str, Any]
    sent: int
    users: int
    on_topic: int  # messages on the interventions topic
    user: tuple[str, dict[str, Any]] | None
    offline: dict[str, Any] | None
    replay_seconds: float
    days: int


def summary_lines(run: Run, f: Findings) -> list[str]:
    m, model = f.metrics, f.model
    pad = " " * 15
    dead = by_label(m, "churn_events_invalid_total", "reason")
    lines = [
        f"events         {int(total(m, 'churn_events_total')):,} applied from {f.users:,} users "
        f"({f.sent:,} messages, {int(total(m, 'churn_events_duplicate_total')):,} duplicates "
        f"skipped): {f.days} days of event time in {f.replay_seconds:.0f} s",
        f"dead letters   {sum(dead.values()):,} on {run.topics['dlq']}: "
        + ", ".join(f"{r} {n}" for r, n in dead.most_common()),
    ]
    state = "" if model.get("ready") else " (not ready: the cold-start prior scores)"
    lines.append(
        f"model          v{model.get('version', 0)}{state}, learned live from "
        f"{model.get('n_labels', 0):,} labels"
    )
    metrics = model.get("metrics") or {}
    if metrics:
        judged = int(total(m, "churn_model_labels_total"))
        window = min(int(run.env.get("STREAM_APP_ROLLING_WINDOW", "2000")), judged)
        # One name per number: each figure with the /model key (= churn_model_<key>)
        # it is, and the labels it is measured on.
        lines += [
            f"rolling AUC    live, on the learner's last {window:,} labels "
            "(/model metrics, gauges churn_model_<key>):",
            f"{pad}  learned model  {metrics['challenger_auc']:.3f}  challenger_auc",
            f"{pad}  recency alone  {metrics['prior_auc']:.3f}  prior_auc",
            f"{pad}  scores served  {metrics['rolling_auc']:.3f}  rolling_auc (the prior and "
            f"earlier models served them; log loss {metrics['rolling_logloss']:.3f})",
        ]
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for lab, v in m.get("churn_interventions_total", []):
        per[lab["action"]][lab["group"]] += int(v)
    lines.append(
        f"interventions  {sum(c['treatment'] for c in per.values()):,} sent "
        f"({f.on_topic:,} on {run.topics['interventions']}), "
        f"{sum(c['holdout'] for c in per.values()):,} held out as the control group"
    )
    if per:
        lines.append(f"{pad}  {'action':<16}{'sent':>7}{'held out':>10}")
        for action, c in sorted(per.items(), key=lambda kv: -sum(kv[1].values())):
            lines.append(f"{pad}  {action:<16}{c['treatment']:>7,}{c['holdout']:>10,}")
    ups = {lab["bound"]: v for lab, v in m.get("churn_uplift", [])}
    ex = Counter(
        {
            (lab["group"], lab["label"]): int(v)
            for lab, v in m.get("churn_uplift_examples_total", [])
        }
    )
    n_h, n_t = ex["holdout", "0"] + ex["holdout", "1"], ex["treatment", "0"] + ex["treatment", "1"]
    rates = ", ".join(
        f"{name} churned {k / n:.0%} of {n:,}"
        for name, k, n in (
            ("holdout", ex["holdout", "1"], n_h),
            ("treated", ex["treatment", "1"], n_t),
        )
        if n
    )
    lines.append(
        f"uplift         {fmt_uplift(ups.get('mid'), ups.get('low'), ups.get('high'))} live"
        + (f": flagged {rates}" if rates else "")
    )
    lines.append(
        f"{pad}(the interval should include 0 here: the replay cannot react to interventions)"
    )
    u = (f.offline or {}).get("uplift") or {}
    if u.get("uplift") is not None:
        lines.append(
            f"{pad}{fmt_uplift(u['uplift'], u['low'], u['high'])} offline, where an "
            f"intervention brings back {float(TREATMENT_EFFECT):.0%} of the churners it reaches"
        )
    looks = [
        (
            rel(run.out / "metrics.txt"),
            f"final /metrics (live: http://127.0.0.1:{run.port}/metrics)",
        )
    ]
    if f.user is not None:
        uid, view = f.user
        iv, now = view["intervention"], view["now"]
        looks.append(
            (
                rel(run.out / f"user-{uid}.json"),
                f"/users/{uid}: flagged {iv['ts'][:10]} ({iv['action']}, p {iv['p']:.2f}), "
                f"now p {now['p']:.2f}, risk {now['risk']:.2f} ({now['tier']})",
            )
        )
    pngs = sorted(p.stem for p in (run.out / "report").glob("*.png"))
    if pngs:
        looks.append(
            (
                rel(run.out / "report") + "*.png",
                "the offline run of the same file (every label, no warm-up; "
                f"simulated treatment effect {float(TREATMENT_EFFECT):.0%}): " + ", ".join(pngs),
            )
        )
    looks.append(("make demo DEMO_ARGS=--keep", "keeps the worker and Kafka up to explore"))
    width = max(len(a) for a, _ in looks) + 2
    for i, (what, why) in enumerate(looks):
        lines.append(("look next      " if i == 0 else pad) + f"{what:<{width}}{why}")
    return lines


# What a client command (`stream-app erase`, `replay`, `config`) needs to reach the worker
# the demo kept: the brokers, the app id and the topics (the API token is not printed).
CLIENT_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "STREAM_APP_APP_ID", "STREAM_APP_TOPIC_")


def export_lines(env: dict[str, str]) -> list[str]:
    """`export` lines an operator pastes into another shell to reach the kept demo."""
    return [
        f"export {k}={shlex.quote(v)}"
        for k, v in sorted(env.items())
        if k.startswith(CLIENT_VARIABLES)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "demo", help="output folder")
    # 2,000 users x 60 days is ~258k messages: about 80 s for one worker on a 2-core
    # machine (~0.3 ms of CPU a message with the write-back cache; 0.55 ms before it).
    parser.add_argument("--users", type=int, default=2000, help="users in the generated traffic")
    parser.add_argument("--days", type=int, default=60, help="days of traffic")
    parser.add_argument("--seed", type=int, default=42, help="generator seed")
    parser.add_argument("--keep", action="store_true", help="keep everything up until Ctrl-C")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="no Kafka, no worker: generate and evaluate offline (the README's figures)",
    )
    args = parser.parse_args()
    # Python turns SIGINT into KeyboardInterrupt only when the parent left SIGINT at its
    # default; a shell script's background job (`make test &`, many CI runners) starts with
    # SIGINT ignored, and the demo then ignored Ctrl-C for good: the cause of the Ctrl-C
    # test's timeouts. Install the handler whatever was inherited.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    procs = Processes()
    try:
        return demo(args, procs)
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    except DemoError as exc:
        say(f"\ndemo failed: {exc}")
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave a broker behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name in procs.stop():
            say(f"stopped {name}")


def f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def report_only(out: Path, events: Path, t0: float) -> int:
    """The offline half alone: the same file and settings, evaluated in the foreground."""
    env, _ = worker_env("unused:9092", out, None)
    say("=== evaluate offline with the demo's settings")
    report = out / "report"
    args = [*STREAM_APP, "evaluate", str(events), "--quiet", "--warmup", "0"]
    proc = subprocess.run(
        [*args, "--report-dir", str(report)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise DemoError(f"evaluate failed:\n{proc.stderr[-2000:]}")
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    u = s["uplift"]
    say(f"\n=== Offline ({time.monotonic() - t0:.0f} s in all)")
    say(f"events         {s['events']:,} from {s['users']:,} users; {s['labels']:,} labels")
    say(
        f"AUC            scores served {f3(s['auc'])} vs recency alone {f3(s['auc_recency'])} "
        f"on all {s['labels']:,} labels; on the "
        f"{s['labels_learned']:,} labels the learned model scored {f3(s['auc_learned'])} vs "
        f"{f3(s['auc_recency_learned'])}"
    )
    say(f"interventions  {s['interventions']:,} sent, {s['holdout_decisions']:,} held out")
    say(
        f"uplift         {fmt_uplift(u['uplift'], u['low'], u['high'])} "
        f"({u['holdout_n']:,} holdout / {u['treated_n']:,} treated examples)"
    )
    say(f"report         {rel(report)}*.png")
    return 0


def demo(args: argparse.Namespace, procs: Processes) -> int:
    t0 = time.monotonic()
    out: Path = args.dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / "report").glob("*"):
        stale.unlink()
    events = out / "events.jsonl"
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    lk = _localkafka()

    step = "" if args.report_only else "1/4 "
    say(f"=== {step}generate {args.users:,} users x {args.days} days -> {events}")
    gen_args = ["generate", "--users", str(args.users), "--days", str(args.days)]
    gen_args += ["--seed", str(args.seed), "--start", START, "--malformed", "0.001"]
    gen_args += ["--duplicates", "0.002", "--treatment-effect", TREATMENT_EFFECT]
    gen_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_APP_")}
    gen = procs.spawn(
        "generate", [*STREAM_APP, *gen_args, "--out", str(events)], gen_env, out / "generate.log"
    )
    if args.report_only:
        if gen.wait() != 0:
            raise DemoError(f"generate failed; log: {out / 'generate.log'}")
        return report_only(out, events, t0)
    if external:
        bootstrap, tag = external, uuid.uuid4().hex[:8]
        say(f"    Kafka: {bootstrap} (KAFKA_BOOTSTRAP_SERVERS; topics prefixed demo-{tag}.)")
    else:
        try:
            procs.cluster = lk.start(out / "kafka", brokers=1)
        except lk.KafkaHarnessError as exc:
            raise DemoError(f"the local Kafka did not start: {exc}") from None
        bootstrap, tag = procs.cluster.bootstrap, None
        pids = ", ".join(str(n.process.pid) for n in procs.cluster.nodes)
        say(
            f"    Kafka {lk.kafka_version()} started at {bootstrap} in "
            f"{procs.cluster.started_seconds:.1f} s (pid {pids})"
        )
    if gen.wait() != 0:
        raise DemoError(f"generate failed; log: {out / 'generate.log'}")
    stats = json.loads((out / "generate.log").read_text().strip().splitlines()[-1])
    expected = int(stats["lines"]) - int(stats.get("saved_path_lines", 0))
    users = distinct_users(events)

    env, topics = worker_env(bootstrap, out, tag)
    port = lk.free_port()
    env["STREAM_APP_WEB_PORT"] = str(port)
    run = Run(out, env, bootstrap, topics, port)
    say("=== 2/4 start the worker (scores, learns, intervenes)")
    log = out / "worker.log"
    worker = procs.spawn("worker", [*STREAM_APP, "worker"], env, log)
    wait_ready(procs, worker, port, log)
    say(f"    worker ready at http://127.0.0.1:{port} (pid {worker.pid}); log: {log}")

    say(f"=== 3/4 replay {args.days} days of traffic into it ({expected:,} messages)")
    t_replay = time.monotonic()
    sent, evaluate, _ = replay_live(procs, run, events, expected, sys.stdout)
    replay_seconds = time.monotonic() - t_replay
    say("=== 4/4 let the learner finish, read the worker, wait for the offline report")
    settle_learner(run)
    metrics_text = http_get(port, "/metrics") or b""
    (out / "metrics.txt").write_bytes(metrics_text)
    m = parse_metrics(metrics_text.decode())
    model = json.loads(http_get(port, "/model") or b"{}")
    (out / "model.json").write_text(json.dumps(model, indent=2))
    on_topic = len(read_to_end(bootstrap, topics["interventions"]))
    user = flagged_user(run)
    if user is not None:
        (out / f"user-{user[0]}.json").write_text(json.dumps(user[1], indent=2))
    offline = None
    if evaluate is not None:
        try:
            evaluate.wait(120)
        except subprocess.TimeoutExpired:
            say("    the offline evaluation is still running after 2 min: no report this time")
        else:
            lines = (out / "evaluate.log").read_text().splitlines()
            summary_line = next((x for x in lines if x.startswith("{")), None)
            if evaluate.returncode == 0 and summary_line:
                offline = json.loads(summary_line)
            else:
                say(f"    offline evaluation failed; log: {out / 'evaluate.log'}")

    lines = summary_lines(
        run, Findings(m, model, sent, users, on_topic, user, offline, replay_seconds, args.days)
    )
    say(f"\n=== Summary ({time.monotonic() - t0:.0f} s in all)")
    for line in lines:
        say(line)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    if args.keep:
        say(f"\nkept running: http://127.0.0.1:{port}/metrics; Ctrl-C stops everything")
        say("to reach it from another shell (stream-app erase, replay, config), paste:")
        for line in export_lines(env):
            say(f"  {line}")
        while worker.poll() is None:
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
