"""`make bench-live`: the live worker against a plain Faust agent and the consume ceiling.

One run, on the same broker and the same pre-loaded topic (N generated events, fixed seed,
4 partitions, keyed by user_id), each reader from a fresh consumer group and pinned to one
core (the broker and this driver share the other):

a. the real worker (`stream-app worker`: users table with changelog, at-least-once commits,
   live learner, policy): from its first applied message until the last event's outputs and
   the state write-back after it are in Kafka;
b. the naive Faust agent of bench/live_agents.py (json.loads, a table update, a River
   prediction per event);
c. the consume ceiling: aiokafka + json.loads only;
d. event-to-decision latency min/p50/p99/max of a fresh worker fed by a paced, batching
   producer at half of (a)'s rate (decision record time minus the causing event's produce
   time, both Kafka CreateTime), over the decisions written during the paced phase;
e. the worker's resident memory per tracked user and changelog bytes written per event;
f. Faust's floor: an agent that only counts messages;
g. sustained load: the highest paced rate a fresh worker holds for 60 s with its lag
   bounded (one second of traffic at the end, not growing), stepping up by 25% from half
   of (a)'s rate, on a longer file of the same recipe (--sustain-days).

Every reader is pinned with taskset (worker on core 1; broker and driver on core 0); a
missing taskset is an error unless --no-pin, and the results then say "unpinned".

Prints a table and writes bench/results/live.json. A benchmark, not a test: it exits
non-zero only when a run breaks, never because a figure is low.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stream_app.kafka.send import partition_for  # noqa: E402
from stream_app.kafka.topics import read_to_end  # noqa: E402
from stream_app.settings import load_settings  # noqa: E402

WORKER_CORE, DRIVER_CORES = "1", "0"


def _localkafka() -> Any:
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "tools/kafka/localkafka.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


PINNING = True  # --no-pin turns it off, and the results say so


def check_pinning() -> None:
    """Pinned runs or none: an unpinned run is not comparable, so it is an error unless
    asked for (--no-pin)."""
    if not PINNING:
        return
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found (Debian: apt-get install util-linux); or --no-pin")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("pinning needs 2 cores (worker on core 1, broker on 0); or --no-pin")


def _pin(core: str) -> list[str]:
    return ["taskset", "-c", core] if PINNING else []


def _pin_pid(pid: int, cores: str) -> None:
    if PINNING:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", cores, str(pid)], capture_output=True, check=True
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[bench-live {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- data -----------------------------------------------------------------------------
def make_events(out: Path, n: int, users: int, days: int, seed: int) -> list[bytes]:
    path = make_file(out, users, days, seed)
    lines: list[bytes] = []
    with path.open("rb") as f:
        for line in f:
            if len(lines) == n:
                break
            if line.strip():
                lines.append(line.rstrip(b"\n"))
    if len(lines) < n:
        raise SystemExit(f"{path} has only {len(lines)} events; raise --users or --days")
    return lines


def make_file(out: Path, users: int, days: int, seed: int) -> Path:
    """A generated events file (no malformed lines, no duplicates), made once per recipe."""
    path = out / f"events-{users}u-{days}d-s{seed}.jsonl"
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stream_app.cli",
                "generate",
                "--users",
                str(users),
                "--days",
                str(days),
                "--seed",
                str(seed),
                "--malformed",
                "0",
                "--duplicates",
                "0",
                "--out",
                str(path),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def preload(bootstrap: str, topic: str, lines: list[bytes], partitions: int) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1
    )
    for raw in lines:
        producer.send(topic, key=json.loads(raw)["user_id"].encode(), value=raw)
    producer.flush()
    producer.close()


# --- the worker -----------------------------------------------------------------------
class Worker:
    def __init__(self, bootstrap: str, topic: str, tag: str, workdir: Path, **env: str) -> None:
        self.port = _free_port()
        self.tag = tag
        self.topics = {
            "STREAM_APP_TOPIC_CLICKSTREAM": topic,
            "STREAM_APP_TOPIC_DLQ": f"{tag}.dlq",
            "STREAM_APP_TOPIC_TRAINING": f"{tag}.training",
            "STREAM_APP_TOPIC_MODEL": f"{tag}.model",
            "STREAM_APP_TOPIC_DECISIONS": f"{tag}.decisions",
            "STREAM_APP_TOPIC_INTERVENTIONS": f"{tag}.interventions",
        }
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_APP_APP_ID": tag,
            "STREAM_APP_WEB_PORT": str(self.port),
            "STREAM_APP_DATA_DIR": str(workdir / tag),
            "STREAM_APP_LOG_LEVEL": "warning",
            "STREAM_APP_TOPIC_PARTITIONS": "4",
            # Generated events are history: no event is "from the future" here.
            "STREAM_APP_MAX_FUTURE_SKEW": "3650d",
            **self.topics,
            **env,
        }
        self.log = (workdir / f"{tag}.log").open("wb")
        self.proc = subprocess.Popen(
            [*_pin(WORKER_CORE), sys.executable, "-m", "stream_app.cli", "worker"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(self.get("/metrics") or ""):
            for s in fam.samples:
                out[s.name] = out.get(s.name, 0.0) + s.value
        return out

    def histogram(self, name: str) -> dict[str, float]:
        """Cumulative bucket counts of a histogram on /metrics, by upper bound."""
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(self.get("/metrics") or ""):
            for s in fam.samples:
                if s.name == f"{name}_bucket":
                    out[s.labels["le"]] = out.get(s.labels["le"], 0.0) + s.value
        return out

    def handled(self) -> float:
        m = self.metrics()
        return (
            m.get("churn_events_total", 0)
            + m.get("churn_events_duplicate_total", 0)
            + m.get("churn_events_invalid_total", 0)
        )

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS"))
        return kib * 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"worker {self.tag} exited; see {self.log.name}")
            if self.get("/ready") is not None:
                return
            time.sleep(0.2)
        raise SystemExit(f"worker {self.tag} not ready after {timeout}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure_recovery(
    bootstrap: str, topic: str, tag: str, workdir: Path, store: str
) -> dict[str, float]:
    """Seconds from starting a worker of the same app id until /ready (its table
    recovered): from the changelog alone (cold), and for rocksdb:// also on the data
    directory the first worker left (warm)."""
    out: dict[str, float] = {}
    kinds = ["warm", "cold"] if store.startswith("rocksdb") else ["cold"]
    for kind in kinds:
        if kind == "cold":
            shutil.rmtree(workdir / tag, ignore_errors=True)
        started = time.monotonic()
        w = Worker(bootstrap, topic, tag, workdir, STREAM_APP_STORE=store)
        try:
            w.wait_ready(timeout=600)
            out[f"{kind}_ready_seconds"] = round(time.monotonic() - started, 2)
        finally:
            w.stop()
    return out


def measure_memory(
    bootstrap: str, events: Path, workdir: Path, store: str, copies: tuple[int, int] = (1, 25)
) -> dict[str, Any]:
    """(e) Resident memory per tracked user: the users the bench file leaves (replayed
    offline, the same engine), written to a fresh app's changelog ``copies[0]`` and then
    ``copies[1]`` times under new ids; a worker recovers each table and gets one event per
    partition (so its deadline index holds every user, as in operation); the slope of its
    RSS between the two sizes is the cost of one more user, with the worker's fixed memory
    (buffers, the model, the runtime) taken out. The users are at rest: recovered, not
    touched since."""
    import msgspec
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from stream_app.offline.evaluate import EvaluateOptions, Replay

    replay = Replay(events, load_settings(), EvaluateOptions(), ordered=False)
    for _ in replay:
        pass
    states = list(replay.store.values())
    last_ts = max(st.last_ts for st in states)
    encode = msgspec.json.Encoder().encode
    partitions = 4
    rss: dict[int, int] = {}
    for n in copies:
        tag = f"bench-m-{uuid.uuid4().hex[:6]}"
        topic, changelog = f"{tag}-in", f"{tag}-users-changelog"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics(
            [
                NewTopic(topic, partitions, 1),
                NewTopic(changelog, partitions, 1, topic_configs={"cleanup.policy": "compact"}),
            ]
        )
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
        for k in range(n):
            for st in states:
                row = st.to_dict()
                uid = row["u"] = f"c{k}-{st.user_id}"
                producer.send(
                    changelog,
                    key=json.dumps(uid).encode(),
                    value=encode(row),
                    partition=partition_for(uid.encode(), partitions),
                )
        producer.flush()
        w = Worker(bootstrap, topic, tag, workdir, STREAM_APP_STORE=store)
        try:
            w.wait_ready(timeout=600)
            sent = 0
            for i in itertools.count():
                uid = f"trigger-{i}"
                if partition_for(uid.encode(), partitions) != sent:
                    continue
                when = datetime.fromtimestamp(last_ts + 60, tz=UTC).isoformat()
                event = {"event_id": uid, "user_id": uid, "event_type": "page_view", "ts": when}
                producer.send(topic, key=uid.encode(), value=json.dumps(event).encode())
                sent += 1
                if sent == partitions:
                    break
            producer.flush()
            deadline = time.monotonic() + 120
            while w.handled() < partitions and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2 * load_settings().state_flush_interval + 1)
            rss[n] = w.rss_bytes()
        finally:
            w.stop()
            producer.close()
    lo, hi = copies
    users = len(states)
    return {
        "users": [lo * users, hi * users],
        "rss_mib": [round(rss[lo] / 2**20, 1), round(rss[hi] / 2**20, 1)],
        "bytes_per_user": round((rss[hi] - rss[lo]) / ((hi - lo) * users)),
    }


def run_worker(
    bootstrap: str,
    topic: str,
    n: int,
    users: int,
    workdir: Path,
    profile: Path | None = None,
    store: str = "memory://",
) -> dict[str, Any]:
    tag = f"bench-w-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    w = Worker(bootstrap, topic, tag, workdir, STREAM_APP_STORE=store)
    spy = None
    try:
        w.wait_ready()
        empty_ready = time.monotonic() - started
        rss0 = w.rss_bytes()
        if profile is not None:  # py-spy samples the worker from outside (core 0)
            profile.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen(
                [
                    *_pin(DRIVER_CORES),
                    "py-spy",
                    "record",
                    "-p",
                    str(w.proc.pid),
                    "-r",
                    "250",
                    "--format",
                    "raw",
                    "-o",
                    str(profile / f"{tag}.txt"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        # t0: the first poll (every 50 ms) that sees an applied message; 50 ms of
        # resolution on a run of tens of seconds.
        while w.handled() == 0:
            if w.proc.poll() is not None:
                raise SystemExit(f"worker exited; see {w.log.name}")
            time.sleep(0.05)
        t0 = time.time()
        cpu0 = w.cpu_seconds()
        while w.handled() < n:
            if w.proc.poll() is not None:
                raise SystemExit(f"worker exited; see {w.log.name}")
            time.sleep(1.0)
        cpu1 = w.cpu_seconds()
        busy = (cpu1 - cpu0) / (time.time() - t0)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        time.sleep(2 * load_settings().state_flush_interval + 1)  # the last flush lands
        rss1 = w.rss_bytes()
        m = w.metrics()
    finally:
        w.stop()
    recovery = measure_recovery(bootstrap, topic, tag, workdir, store)
    recovery["empty_table_ready_seconds"] = round(empty_ready, 2)
    changelog = read_to_end(bootstrap, f"{tag}-users-changelog", 300)
    outputs = changelog + read_to_end(bootstrap, f"{tag}.decisions", 300)
    outputs += read_to_end(bootstrap, f"{tag}.training", 300)
    t1 = max(r.timestamp for r in outputs) / 1000.0
    cl_bytes = sum(len(r.key or b"") + len(r.value or b"") for r in changelog)
    return {
        "events": n,
        "seconds": round(t1 - t0, 3),
        "events_per_second": round(n / (t1 - t0)),
        "worker_cpu_share": round(busy, 3),
        "rss_before_mib": round(rss0 / 2**20, 1),
        "rss_after_mib": round(rss1 / 2**20, 1),
        # every user in use within the last second: held as objects, not packed
        "bytes_per_user_after_run": round((rss1 - rss0) / users),
        "changelog_records": len(changelog),
        "changelog_bytes_per_event": round(cl_bytes / n, 1),
        "recovery": recovery,
        "decisions": int(
            m.get("churn_interventions_total", 0) + m.get("churn_decisions_suppressed_total", 0)
        ),
        "dead_letters": int(m.get("churn_events_invalid_total", 0)),
    }


class Causes:
    """Which produced event made the worker emit a decision, from the engine's rules:
    an event-triggered score comes from the user's event at that time; a silence score at
    deadline d fires on the first event of the partition that moves the watermark past d
    (stream time - allowed lateness), or on the user's own next event after d, whichever
    arrives first (engine.py: advance() and process())."""

    def __init__(self, lines: list[bytes], partitions: int, lateness: float) -> None:
        self.lateness = lateness
        self.by_key: dict[tuple[str, float], int] = {}
        self.user_events: dict[str, list[tuple[float, int]]] = {}
        self.part_max: dict[int, tuple[list[float], list[int]]] = {}
        self.partitions = partitions
        for i, raw in enumerate(lines):
            doc = json.loads(raw)
            uid, ts = doc["user_id"], _ts(doc["ts"])
            self.by_key.setdefault((uid, ts), i)
            self.user_events.setdefault(uid, []).append((ts, i))
            maxes, idx = self.part_max.setdefault(partition_for(uid.encode(), partitions), ([], []))
            if not maxes or ts > maxes[-1]:
                maxes.append(ts)
                idx.append(i)

    def of(self, decision: dict[str, Any]) -> int | None:
        uid, ts = decision["user_id"], _ts(decision["ts"])
        if decision["trigger"] == "event":
            return self.by_key.get((uid, ts))
        candidates = []
        own = self.user_events.get(uid, [])
        j = bisect.bisect_right(own, (ts, 1 << 60))
        if j < len(own):
            candidates.append(own[j][1])
        maxes, idx = self.part_max.get(partition_for(uid.encode(), self.partitions), ([], []))
        k = bisect.bisect_right(maxes, ts + self.lateness)
        if k < len(maxes):
            candidates.append(idx[k])
        return min(candidates) if candidates else None


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class PacedProducer:
    """Sends lines at a steady rate with a batching producer (5 ms linger), so the driver
    does not starve the broker that shares its core; records each event's produce time
    (Kafka CreateTime, ms) and how many were sent."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1
        )
        self.sent_ms: dict[int, int] = {}
        self.count = 0

    def run(self, lines: list[bytes], rate: float, first_index: int = 0) -> float:
        """Send ``lines`` at ``rate`` per second; returns the rate achieved."""
        send, topic = self.producer.send, self.topic
        keys = [json.loads(raw)["user_id"].encode() for raw in lines]
        stamp = self.sent_ms
        start = time.perf_counter()
        for i, raw in enumerate(lines):
            delay = start + i / rate - time.perf_counter()
            if delay > 0.002:  # sleep in steps of a few ms, send what is due in between
                time.sleep(delay)
            fut = send(topic, key=keys[i], value=raw)
            fut.add_callback(lambda meta, k=first_index + i: stamp.__setitem__(k, meta.timestamp))
            self.count += 1
        self.producer.flush()
        return len(lines) / (time.perf_counter() - start)

    def close(self) -> None:
        self.producer.close()


def core_times() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat."""
    out: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            vals = [int(v) for v in fields]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            out[name] = (sum(vals) - idle, sum(vals))
    return out


def core_busy(before: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Share of each CPU busy since ``before``."""
    after = core_times()
    return {
        cpu: round((after[cpu][0] - b[0]) / max(1, after[cpu][1] - b[1]), 3)
        for cpu, b in before.items()
    }


def run_latency(
    bootstrap: str, lines: list[bytes], rate: float, seconds: float, workdir: Path
) -> dict[str, Any]:
    """A fresh worker first catches up on the first 40% of the events (so users have
    history and the policy has something to flag), then the next ones arrive from a paced
    producer at ``rate`` per second. Latency = a decision's record time minus its causing
    event's produce time, for decisions written after the paced phase began."""
    topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
    warm = int(len(lines) * 0.4)
    total = min(int(rate * seconds), len(lines) - warm)
    preload(bootstrap, topic, lines[:warm], 4)
    tag = f"bench-l-{uuid.uuid4().hex[:6]}"
    w = Worker(bootstrap, topic, tag, workdir)
    paced = PacedProducer(bootstrap, topic)
    try:
        w.wait_ready()
        while w.handled() < warm:
            if w.proc.poll() is not None:
                raise SystemExit(f"worker exited; see {w.log.name}")
            time.sleep(0.5)
        time.sleep(1.0)  # the catch-up's last decisions are written before the paced phase
        paced_from_ms = time.time() * 1000
        cores = core_times()
        achieved = paced.run(lines[warm : warm + total], rate)
        busy = core_busy(cores)  # core 0: broker + this producer; core 1: the worker
        while w.handled() < warm + total:
            if w.proc.poll() is not None:
                raise SystemExit(f"worker exited; see {w.log.name}")
            time.sleep(0.5)
        delay = w.histogram("churn_produce_to_apply_seconds")
    finally:
        paced.close()
        w.stop()
    cause = Causes(lines[warm : warm + total], 4, load_settings().allowed_lateness)
    lat: list[float] = []
    by_trigger: dict[str, list[float]] = {}
    unmatched = negative = 0
    sent = paced.sent_ms
    for rec in read_to_end(bootstrap, f"{tag}.decisions", 300):
        if rec.timestamp < paced_from_ms:
            continue  # a decision of the catch-up phase
        decision = json.loads(rec.value)
        i = cause.of(decision)
        if i is None or i not in sent:
            unmatched += 1
            continue
        ms = rec.timestamp - sent[i]
        if ms < 0:
            negative += 1  # attributed to an event produced after it: a wrong cause
            continue
        lat.append(ms)
        by_trigger.setdefault(decision["trigger"], []).append(ms)
    if len(lat) < 20:
        raise SystemExit(f"only {len(lat)} decisions matched their events: no latency figure")
    lat.sort()
    return {
        "rate_target": round(rate),
        "rate_achieved": round(achieved),
        "events": total,
        "samples": len(lat),
        "unmatched": unmatched,
        "negative_excluded": negative,
        "min_ms": round(lat[0], 1),
        "p50_ms": round(statistics.median(lat), 1),
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "max_ms": round(lat[-1], 1),
        # The worker's own view: produce time to applied, per batch (cumulative buckets).
        "produce_to_apply_buckets": delay,
        "cores_busy_while_paced": busy,
        "p50_ms_by_trigger": {k: statistics.median(v) for k, v in sorted(by_trigger.items())},
        "samples_by_trigger": {k: len(v) for k, v in sorted(by_trigger.items())},
    }


def sample_lag(
    w: Worker, paced: PacedProducer, base: int, lags: list[float], done: threading.Event
) -> None:
    """Every second until ``done``: events produced but not yet handled by the worker."""
    while not done.is_set():
        lags.append(base + paced.count - w.handled())
        done.wait(1.0)


def run_sustained(
    bootstrap: str, path: Path, start_rate: float, seconds: float, workdir: Path, max_steps: int
) -> dict[str, Any]:
    """The highest paced rate one fresh worker holds for ``seconds``: lag (events produced
    but not yet handled) sampled every second stays under one second of traffic at the end
    and does not grow over the second half. Steps up by 25% from ``start_rate`` until a
    rate is not held; when ``start_rate`` itself is not held, steps down by 20% until one
    is; at most ``max_steps``, or until the producer cannot reach a rate. The events are
    the next lines of ``path`` (a file long enough for every step), in order."""
    topic = f"bench-sus-{uuid.uuid4().hex[:6]}"
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    tag = f"bench-s-{uuid.uuid4().hex[:6]}"
    w = Worker(bootstrap, topic, tag, workdir)
    steps: list[dict[str, Any]] = []
    held_rate = 0.0
    produced = 0
    try:
        w.wait_ready()
        rate = start_rate
        paced = PacedProducer(bootstrap, topic)
        with path.open("rb") as f:
            source = (line.rstrip(b"\n") for line in f if line.strip())
            for _ in range(max_steps):
                chunk = list(itertools.islice(source, int(rate * seconds)))
                if len(chunk) < rate * seconds * 0.9:
                    log(f"sustained: {path} has too few events left for {rate:.0f}/s")
                    break
                lags: list[float] = []
                done = threading.Event()
                paced.count = 0
                t = threading.Thread(
                    target=sample_lag, args=(w, paced, produced, lags, done), daemon=True
                )
                t.start()
                achieved = paced.run(chunk, rate, first_index=produced)
                done.set()
                t.join()
                produced += len(chunk)
                half = lags[len(lags) // 2 :]
                end_lag = lags[-1] if lags else float("inf")
                growing = bool(half) and half[-1] > half[0] + rate * 0.5
                held = achieved >= rate * 0.97 and end_lag <= rate and not growing
                steps.append(
                    {
                        "rate_target": round(rate),
                        "rate_achieved": round(achieved),
                        "lag_median": round(statistics.median(lags)) if lags else None,
                        "lag_max": round(max(lags)) if lags else None,
                        "lag_end": round(end_lag),
                        "held": held,
                    }
                )
                log(f"sustained: {steps[-1]}")
                going_down = not steps[0]["held"]
                if held:
                    held_rate = max(held_rate, achieved)
                if going_down == held:  # up: the first miss ends it; down: the first hold
                    break
                rate *= 0.8 if going_down else 1.25
                while w.handled() < produced:  # drain before the next step
                    time.sleep(0.5)
        paced.close()
    finally:
        w.stop()
    return {"events_per_second": round(held_rate), "seconds": seconds, "steps": steps}


def run_agent(kind: str, bootstrap: str, topic: str, n: int, workdir: Path) -> dict[str, Any]:
    out = workdir / f"{kind}-{uuid.uuid4().hex[:6]}.json"
    proc = subprocess.run(
        [
            *_pin(WORKER_CORE),
            sys.executable,
            str(ROOT / "bench" / "live_agents.py"),
            kind,
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--n",
            str(n),
            "--datadir",
            str(workdir / "agents"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if not out.exists():
        raise SystemExit(f"{kind} run broke:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat (a), (b), (c), (e), (f): medians"
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument(
        "--latency-rate", type=float, help="(d) at this rate, not half of (a)'s median"
    )
    parser.add_argument(
        "--sustain-seconds", type=float, default=60.0, help="(g): each paced rate's length"
    )
    parser.add_argument(
        "--sustain-days", type=int, default=1500, help="(g): days of traffic to draw from"
    )
    parser.add_argument("--sustain-steps", type=int, default=5, help="(g): rates tried at most")
    parser.add_argument("--only", default="a,b,c,d,e,f,g", help="comma list of parts to run")
    parser.add_argument(
        "--no-pin", action="store_true", help="run unpinned (taskset missing): not comparable"
    )
    parser.add_argument("--store", default="memory://", help="the worker's table store")
    parser.add_argument("--profile", type=Path, help="py-spy the worker; stacks go here")
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "bench-live")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "live.json")
    args = parser.parse_args()
    global PINNING
    PINNING = not args.no_pin
    check_pinning()
    parts = set(args.only.split(","))
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)

    cluster = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        lk = _localkafka()
        lk.fetch()
        cluster = lk.start(args.workdir / f"kafka-{uuid.uuid4().hex[:6]}", brokers=1)
        bootstrap = cluster.bootstrap
        for node in cluster.nodes:
            _pin_pid(node.process.pid, DRIVER_CORES)
        log(f"local broker at {bootstrap} (pinned to core {DRIVER_CORES})")
    _pin_pid(os.getpid(), DRIVER_CORES)
    try:
        log(f"generating {args.events} events ({args.users} users, seed {args.seed})")
        lines = make_events(args.workdir, args.events, args.users, args.days, args.seed)
        users = len({json.loads(raw)["user_id"] for raw in lines})
        topic = f"bench-in-{uuid.uuid4().hex[:6]}"
        t = time.perf_counter()
        preload(bootstrap, topic, lines, args.partitions)
        log(f"pre-loaded {len(lines)} events into {topic} in {time.perf_counter() - t:.1f}s")

        runs: dict[str, list[dict[str, Any]]] = {}
        for i in range(args.runs):
            for kind in ("ceiling", "floor", "naive", "worker"):
                letter = {"worker": "a", "naive": "b", "ceiling": "c", "floor": "f"}[kind]
                if letter not in parts:
                    continue
                log(f"run {i + 1}/{args.runs}: {kind}")
                if kind == "worker":
                    res = run_worker(
                        bootstrap,
                        topic,
                        args.events,
                        users,
                        args.workdir,
                        args.profile,
                        args.store,
                    )
                else:
                    res = run_agent(kind, bootstrap, topic, args.events, args.workdir)
                log(f"  {kind}: {res['events_per_second']} events/s")
                runs.setdefault(kind, []).append(res)

        def med(kind: str, key: str = "events_per_second") -> float | None:
            vals = [r[key] for r in runs.get(kind, [])]
            return statistics.median(vals) if vals else None

        worker_eps = med("worker")
        latency = None
        if "d" in parts:
            rate = args.latency_rate or (worker_eps or 10_000) / 2
            log(f"latency at {rate:.0f} events/s for {args.latency_seconds:.0f}s")
            latency = run_latency(bootstrap, lines, rate, args.latency_seconds, args.workdir)
        memory = None
        if "e" in parts:
            log("memory per user at rest (two recoveries)")
            replayed = args.workdir / f"events-{len(lines)}.jsonl"  # what (a) consumed
            replayed.write_bytes(b"\n".join(lines) + b"\n")
            tries = []
            for i in range(args.runs):
                log(f"run {i + 1}/{args.runs}: memory")
                tries.append(measure_memory(bootstrap, replayed, args.workdir, args.store))
                log(f"  {tries[-1]['bytes_per_user']} bytes per user at rest")
            memory = {
                "bytes_per_user": statistics.median(t["bytes_per_user"] for t in tries),
                "runs": tries,
            }
        sustained = None
        if "g" in parts:
            start = (worker_eps or 10_000) * 0.5
            log(f"sustained load from {start:.0f} events/s, {args.sustain_seconds:.0f}s a step")
            big = make_file(args.workdir, args.users, args.sustain_days, args.seed + 1)
            sustained = run_sustained(
                bootstrap, big, start, args.sustain_seconds, args.workdir, args.sustain_steps
            )

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 3) if a and b else None

        naive, floor, ceiling = med("naive"), med("floor"), med("ceiling")
        result = {
            "worker_events_per_second": worker_eps,
            "naive_agent_events_per_second": naive,
            "consume_ceiling_events_per_second": ceiling,
            "faust_floor_events_per_second": floor,
            "latency_min_ms": latency and latency["min_ms"],
            "latency_p50_ms": latency and latency["p50_ms"],
            "latency_p99_ms": latency and latency["p99_ms"],
            "latency_max_ms": latency and latency["max_ms"],
            "sustained_events_per_second": sustained and sustained["events_per_second"],
            "bytes_per_user": memory and memory["bytes_per_user"],
            "bytes_per_user_after_run": med("worker", "bytes_per_user_after_run"),
            "changelog_bytes_per_event": med("worker", "changelog_bytes_per_event"),
            "worker_vs_naive": ratio(worker_eps, naive),
            "worker_vs_faust_floor": ratio(worker_eps, floor),
            "worker_vs_ceiling": ratio(worker_eps, ceiling),
            "latency": latency,
            "memory": memory,
            "sustained": sustained,
            "runs": runs,
            "setup": {
                "events": args.events,
                "users": users,
                "partitions": args.partitions,
                "seed": args.seed,
                "store": args.store,
                "worker_core": WORKER_CORE if PINNING else "unpinned",
                "broker_and_driver_cores": DRIVER_CORES,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "machine": platform.platform(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        rows = [
            ("(a) worker", worker_eps),
            ("(b) naive Faust agent", naive),
            ("(c) consume ceiling (aiokafka + json)", ceiling),
            ("(f) Faust floor (count only)", floor),
        ]
        print(f"\nlive: {args.events} events, {users} users, {args.partitions} partitions")
        for name, v in rows:
            print(f"  {name:<40} {v if v is not None else '-':>10} events/s")
        if latency:
            print(
                f"  (d) latency at {latency['rate_achieved']}/s      "
                f"min {latency['min_ms']} ms, p50 {latency['p50_ms']} ms, "
                f"p99 {latency['p99_ms']} ms, max {latency['max_ms']} ms "
                f"({latency['samples']} decisions)"
            )
        if sustained:
            print(
                f"  (g) sustained for {sustained['seconds']:.0f}s: "
                f"{sustained['events_per_second']}/s"
            )
        print(
            f"  (e) bytes per user at rest {result['bytes_per_user']} (after the run, all "
            f"in use: {result['bytes_per_user_after_run']}), changelog bytes per event "
            f"{result['changelog_bytes_per_event']}"
        )
        for k in ("worker_vs_naive", "worker_vs_faust_floor", "worker_vs_ceiling"):
            print(f"  {k:<40} {result[k]}")
        print(f"written to {args.out}")
        return 0
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())
