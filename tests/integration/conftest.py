"""Run the real worker (``stream-app worker``) as a subprocess against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from stream_app.cli import main as cli_main
from stream_app.kafka.producer import ChurnProducer, replay
from stream_app.kafka.send import partition_for
from stream_app.kafka.topics import read_to_end  # noqa: F401 (re-exported for the tests)
from stream_app.offline import EvaluateOptions, Replay
from stream_app.settings import load_settings
from tests.conftest import _localkafka

free_port = _localkafka().free_port


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = int(env["STREAM_APP_WEB_PORT"])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_app.cli", "worker"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def fetch(self, path: str, token: str | None = None) -> tuple[int, str]:
        """(HTTP status, body text) of a GET, whatever the status and content type."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (http, loopback)
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def request(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """(HTTP status, parsed JSON body) of a GET, with a bearer token if given."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (http, loopback)
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a counter/gauge's samples matching ``labels`` (0 when absent)."""
        text = self.get("/metrics") or ""
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final commit."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WorkerPool:
    """Starts workers against one Kafka (``bootstrap``) and stops them all at the end."""

    def __init__(self, bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.bootstrap = bootstrap
        self.tmp_path_factory = tmp_path_factory
        self.workers: list[Worker] = []

    def start(self, like: Worker | None = None, **settings: str) -> Worker:
        """A new worker; ``like=w`` starts one with w's settings (same app id and topics:
        a restart, or a second member of the consumer group)."""
        tag = uuid.uuid4().hex[:8]
        tmp = self.tmp_path_factory.mktemp(f"worker-{tag}")
        if like is not None:
            env = {
                **like.env,
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_DATA_DIR": str(tmp / "data"),
            }
            env.update({f"STREAM_APP_{k.upper()}": v for k, v in settings.items()})
            return self._launch(Worker(env, tmp / "worker.log"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_APP_")}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "STREAM_APP_APP_ID": f"it-{tag}",
                "STREAM_APP_TOPIC_CLICKSTREAM": f"clickstream-{tag}",
                "STREAM_APP_TOPIC_DLQ": f"clickstream-{tag}.dlq",
                "STREAM_APP_TOPIC_TRAINING": f"training-{tag}",
                "STREAM_APP_TOPIC_MODEL": f"model-{tag}",
                "STREAM_APP_TOPIC_DECISIONS": f"decisions-{tag}",
                "STREAM_APP_TOPIC_INTERVENTIONS": f"interventions-{tag}",
                "STREAM_APP_TOPIC_ERASURE": f"erasure-{tag}",
                "STREAM_APP_TOPIC_ERASURE_AUDIT": f"erasure-{tag}.audit",
                "STREAM_APP_TOPIC_PARTITIONS": "4",
                "STREAM_APP_DATA_DIR": str(tmp / "data"),
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_LOG_LEVEL": os.environ.get("IT_WORKER_LOG_LEVEL", "info"),
            }
        )
        env.update({f"STREAM_APP_{k.upper()}": v for k, v in settings.items()})
        return self._launch(Worker(env, tmp / "worker.log"))

    def _launch(self, worker: Worker) -> Worker:
        self.workers.append(worker)
        try:
            wait_for(lambda: not worker.alive() or worker.get("/health"), 60, "worker /health")
            assert worker.alive(), (
                f"worker exited; log: {worker.log}\n{worker.log.read_text()[-3000:]}"
            )
        except BaseException:
            worker.stop()
            raise
        return worker

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()


@pytest.fixture(scope="module")
def start_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Worker]]:
    pool = WorkerPool(kafka_bootstrap, tmp_path_factory)
    yield pool.start
    pool.stop_all()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A Kafka of this test's own (``brokers`` from the test's parametrisation, as
    ``@pytest.mark.parametrize("cluster", [3], indirect=True)``)."""
    started = _localkafka().start(tmp_path / "kafka", brokers=request.param)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def pool(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    workers = WorkerPool(cluster.bootstrap, tmp_path_factory)
    yield workers
    workers.stop_all()


def consume_all(
    bootstrap: str,
    topic: str,
    expect: int = 0,
    timeout: float = 60.0,
    done: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """Read a topic from the beginning until ``done(messages)`` (default: ``expect``
    messages arrived) or the timeout."""
    finished = done or (lambda msgs: len(msgs) >= expect)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not finished(out) and time.monotonic() < deadline:
            for msg in consumer:
                out.append(msg)
                if finished(out):
                    break
    finally:
        consumer.close()
    return out


# Short horizon and intervals, so a few weeks of generated traffic resolve thousands of
# labels and the live learner publishes snapshots within seconds.
SHORT_LEARNING = {
    "horizon": "2d",
    "snapshot_interval": "12h",
    "rescore_after": "1d,3d,7d",
    "min_labels_ready": "200",
    "snapshot_every": "100",
    "rolling_window": "400",
    "snapshot_max_interval": "2s",
}


# --- Fault tests: replay a generated file, let a fault happen, compare with offline ---------

# The file is replayed far faster than real time, so the partitions' stream times run ahead
# of each other; a day of allowed lateness keeps the comparisons about faults.
FAULT_SETTINGS = {"allowed_lateness": "1d"}
# For files of a few days: labels after 2 days and a snapshot every 100 of them, so the live
# learner publishes snapshots, and a policy that flags small rises, so decisions and
# interventions (whose ids the fault tests check) go out within the replay.
LEARNING_SETTINGS = {
    **FAULT_SETTINGS,
    "horizon": "2d",
    "min_labels_ready": "100",
    "snapshot_every": "100",
    "policy_file": str(Path(__file__).with_name("fault_policy.toml")),
}


# Events per second the fault tests produce at (see Traffic.send).
PACED_RATE = 2500.0


@dataclass
class Traffic:
    """A generated events file and what the checks need to know about it."""

    path: Path
    partitions: int
    events: int
    last: dict[str, float]  # partition -> time of its last event
    users: dict[int, set[str]]  # partition -> its users

    @classmethod
    def generate(cls, path: Path, users: int, days: int, seed: int, partitions: int) -> Traffic:
        args = ["generate", "--users", str(users), "--days", str(days), "--seed", str(seed)]
        assert cli_main([*args, "--start", "2026-02-01T00:00:00Z", "--out", str(path)]) == 0
        last: dict[str, float] = {}
        by_part: dict[int, set[str]] = {}
        n = 0
        for line in path.read_text().splitlines():
            row = json.loads(line)
            part = partition_for(row["user_id"].encode(), partitions)
            ts = datetime.fromisoformat(row["ts"]).timestamp()
            last[str(part)] = max(last.get(str(part), 0.0), ts)
            by_part.setdefault(part, set()).add(row["user_id"])
            n += 1
        return cls(path, partitions, n, last, by_part)

    def send(self, bootstrap: str, topic: str, rate: float = PACED_RATE) -> int:
        """Produce the file at ``rate`` events/s from a background thread and return the
        number of events it will send. Paced, because the worker applies events faster
        than a test can poll (a whole 25k-event file in a few seconds): a fault meant for
        the middle of the replay must find a middle. :func:`wait_until_done` waits for
        the thread and re-raises what it raised."""

        def run() -> None:
            try:
                with ChurnProducer(bootstrap, topic) as prod:
                    self.sent = int(replay(self.path, prod, rate)["sent"])
            except BaseException as exc:  # surfaced by wait_until_done
                self.error = exc

        self.sent, self.error = 0, None
        self.thread = threading.Thread(target=run, name="traffic", daemon=True)
        self.thread.start()
        return self.events

    def wait_sent(self, timeout: float) -> None:
        thread = getattr(self, "thread", None)
        if thread is not None:
            thread.join(timeout)
            assert not thread.is_alive(), f"traffic still sending after {timeout}s"
        if getattr(self, "error", None) is not None:
            raise AssertionError(f"sending the traffic failed: {self.error!r}")
        assert self.sent == self.events, (self.sent, self.events)

    def users_in(self, partitions: Iterable[int]) -> int:
        return sum(len(self.users.get(p, ())) for p in partitions)


def owned(worker: Worker) -> set[int]:
    """The clickstream partitions the worker says it owns (/health), empty if it is down."""
    body = worker.get("/health")
    return set(json.loads(body)["partitions"]) if body else set()


def wait_until_done(worker: Worker, traffic: Traffic, timeout: float) -> None:
    """Until ``worker`` reached the last event time of every partition and its counters
    hold still (the changelog writes follow the applied events)."""

    traffic.wait_sent(timeout)

    def caught_up() -> bool:
        return all(
            worker.metric("churn_stream_time_seconds", partition=p) >= t
            for p, t in traffic.last.items()
        )

    try:
        wait_for(caught_up, timeout, "the worker to reach the end of every partition", every=1)
    except AssertionError:
        behind = {
            p: t - worker.metric("churn_stream_time_seconds", partition=p)
            for p, t in traffic.last.items()
        }
        raise AssertionError(
            f"not caught up after {timeout}s: seconds of event time behind per partition "
            f"{behind}; alive={worker.alive()}; log {worker.log}"
        ) from None
    counted: list[float] = []

    def still() -> bool:
        counted.append(worker.metric("churn_events_total"))
        return len(counted) > 2 and counted[-1] == counted[-3]

    wait_for(still, 60, "the counters to hold still", every=2)


def offline_run(traffic: Traffic, **settings: str) -> Replay:
    """The offline evaluator over the same file: the reference state."""
    offline = Replay(traffic.path, load_settings(**settings), EvaluateOptions(), ordered=False)
    for _ in offline:
        pass
    return offline


def wait_all_committed(bootstrap: str, group: str, topic: str, timeout: float = 60.0) -> None:
    """Until the consumer group committed every offset of ``topic`` (nothing left to
    redeliver)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        end = consumer.end_offsets(tps)
        state: dict[TopicPartition, int] = {}

        def done() -> bool:
            try:
                got = admin.list_group_offsets({group: tps})[group]
            except KafkaError:  # e.g. the coordinator of a young group is not known yet
                return False
            state.update({tp: got[tp].offset for tp in tps if tp in got})
            return all(state.get(tp, -1) >= end[tp] for tp in tps)

        try:
            wait_for(done, timeout, f"group {group} to commit the end of {topic}", every=1)
        except AssertionError:
            gaps = {tp.partition: end[tp] - state.get(tp, 0) for tp in tps}
            raise AssertionError(f"uncommitted messages per partition: {gaps}") from None
    finally:
        consumer.close()
        admin.close()


def changelog_state(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """The newest state per user in the users changelog (what a restarted or taking-over
    worker recovers); tombstones remove the user."""
    out: dict[str, dict[str, Any]] = {}
    for msg in read_to_end(bootstrap, topic, timeout=120):
        key = msg.key.decode()
        if key.startswith('"'):
            key = json.loads(key)
        if msg.value is None:
            out.pop(key, None)
        else:
            out[key] = json.loads(msg.value)
    return out


def compare_with_offline(
    worker: Worker, bootstrap: str, traffic: Traffic, offline: Replay
) -> dict[str, int]:
    """Assert that nothing was lost and nothing counted twice, two ways:

    - the changelog (once every offset is committed) holds each user's event count as the
      offline evaluator has it: lost and doubled events are counted per user;
    - each user's live features (``/users/{id}``, as of their partition's stream time)
      equal the offline state's at the same instant (decayed sums, counts, recency, tenure).

    Fails with the counts of missing and extra users and events. Returns the counts."""
    env = worker.env
    app_id = env["STREAM_APP_APP_ID"]
    wait_all_committed(bootstrap, app_id, env["STREAM_APP_TOPIC_CLICKSTREAM"])
    logged = changelog_state(bootstrap, f"{app_id}-users-changelog")
    expected = {uid: st.events_total for uid, st in offline.store.items()}
    got = {uid: int(d["et"]) for uid, d in logged.items()}
    lost = sum(max(0, n - got.get(uid, 0)) for uid, n in expected.items())
    doubled = sum(max(0, n - expected.get(uid, 0)) for uid, n in got.items())
    problems = {
        "changelog_users_missing": len(expected.keys() - got.keys()),
        "changelog_users_extra": len(got.keys() - expected.keys()),
        "changelog_events_lost": lost,
        "changelog_events_doubled": doubled,
        "changelog_users_wrong_count": sum(1 for uid, n in expected.items() if got.get(uid) != n),
    }

    space = offline.engine.space
    missing_live: list[str] = []
    wrong_live: dict[str, Any] = {}
    for uid, state in sorted(offline.store.items()):
        status, body = worker.request(f"/users/{uid}")
        if status == 404:
            missing_live.append(uid)
            continue
        assert status == 200, (uid, status, body)
        # (the same instant as the live answer: the state is what is compared)
        want = state.features(datetime.fromisoformat(body["as_of"]).timestamp(), space)
        wrong = {
            name: (body["features"].get(name), value)
            for name, value in want.items()
            if body["features"].get(name) != pytest.approx(value, rel=1e-9, abs=1e-12)
        }
        if wrong:
            wrong_live[uid] = (body["as_of"], wrong)
    problems["live_users_missing"] = len(missing_live)
    problems["live_users_wrong"] = len(wrong_live)
    sample = dict(list(wrong_live.items())[:3])
    assert not any(problems.values()), (
        f"{sum(expected.values())} events of {len(expected)} users offline; against it: "
        f"{problems}; e.g. missing live {missing_live[:5]}, wrong live {sample}"
    )
    return {"users": len(expected), "events": sum(expected.values())}


def assert_ids_deterministic(bootstrap: str, env: dict[str, str]) -> dict[str, int]:
    """A decision or intervention sent twice (before and again after a fault) carries the
    same id: one id per (user, trigger, score time). Returns how many ids were repeated."""
    repeated: dict[str, int] = {}
    for topic, id_field in (("DECISIONS", "decision_id"), ("INTERVENTIONS", "intervention_id")):
        rows = [
            json.loads(m.value)
            for m in read_to_end(bootstrap, env[f"STREAM_APP_TOPIC_{topic}"], timeout=60)
        ]
        ids: dict[tuple[str, str, str], set[str]] = {}
        for row in rows:
            ids.setdefault((row["user_id"], row["trigger"], row["ts"]), set()).add(row[id_field])
        clashes = {k: v for k, v in ids.items() if len(v) > 1}
        assert not clashes, f"{len(clashes)} {topic.lower()} with two ids, e.g. {clashes}"
        counts = Counter(row[id_field] for row in rows)
        repeated[id_field] = sum(n > 1 for n in counts.values())
        repeated[f"{topic.lower()}_total"] = len(rows)
    return repeated
