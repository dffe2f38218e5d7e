"""Run a real Apache Kafka (KRaft mode) on loopback from jars that Maven fetched.

Standard library only, so the Makefile and the test fixtures can use it before the
project's virtualenv exists. Commands:

    python tools/kafka/localkafka.py fetch                 # jars -> .kafka/libs (Maven)
    python tools/kafka/localkafka.py start [--brokers 3]   # background, prints bootstrap
    python tools/kafka/localkafka.py start --sasl churn:secret  # + SCRAM-SHA-512 listeners
    python tools/kafka/localkafka.py stop
    python tools/kafka/localkafka.py status

From Python, ``start()`` returns a :class:`Cluster` whose nodes can be killed
(``kill_node``), stopped (``stop_node``) and started again on the same port and data
directory (``start_node``), for fault tests.

The single-broker mode listens on 127.0.0.1:9092 (the project's default bootstrap);
``--brokers 3`` starts three combined broker/controller nodes on 9092, 9094 and 9096 with
replication factor 3, for fault tests. Each broker logs to ``<workdir>/broker-N.log``.
With SASL users (``start(sasl_users=...)``, ``--sasl``) each node also listens for
SCRAM-SHA-512 logins on SASL_PLAINTEXT and, when openssl is on PATH, SASL_SSL (a
throw-away CA in ``<workdir>/tls/ca.pem``).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().with_name("pom.xml")
LOG4J = Path(__file__).resolve().with_name("log4j2.properties")
LIBS = Path(os.environ.get("STREAM_APP_KAFKA_LIBS", ROOT / ".kafka" / "libs"))
DEFAULT_WORKDIR = ROOT / ".kafka" / "run"
READY_LINE = "Kafka Server started"


class KafkaHarnessError(RuntimeError):
    """The local broker could not be fetched or started; the message says why."""


def kafka_version() -> str:
    text = POM.read_text(encoding="utf-8")
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def fetch(libs: Path = LIBS, quiet: bool = True) -> Path:
    """Assemble the broker's classpath with Maven (cached: a no-op when present)."""
    marker = libs / f".complete-{kafka_version()}"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise KafkaHarnessError("Maven (mvn) is not on PATH; install it to fetch Kafka")
    if shutil.which("java") is None:
        raise KafkaHarnessError("java is not on PATH; Kafka needs a JDK 17+")
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    # Batch mode, no colours, no download progress: nothing but errors reach the terminal
    # (a first run printed ~60 "[INFO] Copying" lines with raw escape codes).
    cmd = [
        "mvn",
        "-B",
        "--no-transfer-progress",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stdout or "")[-2000:] + (proc.stderr or "")[-2000:]
        raise KafkaHarnessError(f"mvn failed to fetch Kafka {kafka_version()}:\n{detail}")
    marker.touch()
    return libs


def new_cluster_id() -> str:
    """A random KRaft cluster id (22 URL-safe base64 characters). One that starts with '-'
    would be read by the storage tool as an option (1 start in 64 failed with "argument
    --cluster-id/-t: expected one argument"), so those are drawn again, as Kafka's own
    Uuid.randomUuid() does."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    log_file: Path
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    argv: list[str] = field(default_factory=list)  # the command that starts this node
    log_offset: int = 0  # where the current run's output starts in log_file
    sasl_port: int | None = None  # the SASL_PLAINTEXT (SCRAM-SHA-512) listener, if any
    sasl_ssl_port: int | None = None  # the same over TLS (SASL_SSL), if openssl was found


@dataclass
class Cluster:
    """One to three KRaft nodes, each both broker and controller."""

    workdir: Path
    nodes: list[Node] = field(default_factory=list)
    started_seconds: float = 0.0

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listeners (``start(sasl_users=...)``; SCRAM-SHA-512)."""
        ports = [n.sasl_port for n in self.nodes if n.sasl_port is not None]
        if not ports:
            raise KafkaHarnessError("this cluster has no SASL listener: start(sasl_users=...)")
        return ",".join(f"127.0.0.1:{p}" for p in ports)

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The SASL_SSL listeners: SCRAM-SHA-512 over TLS, certificates signed by
        :attr:`ca_file` (made with openssl at start)."""
        ports = [n.sasl_ssl_port for n in self.nodes if n.sasl_ssl_port is not None]
        if not ports:
            raise KafkaHarnessError("no SASL_SSL listener: start(sasl_users=...) with openssl")
        return ",".join(f"127.0.0.1:{p}" for p in ports)

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the brokers' certificates (SASL_SSL clients trust it)."""
        return self.workdir / "tls" / "ca.pem"

    @property
    def log_files(self) -> list[Path]:
        return [n.log_file for n in self.nodes]

    def tail_logs(self, lines: int = 40) -> str:
        out = []
        for path in self.log_files:
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self, timeout: float = 20.0) -> None:
        for node in self.nodes:
            if node.process and node.process.poll() is None:
                node.process.terminate()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()

    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KafkaHarnessError(f"no node {node_id} in this cluster")

    def kill_node(self, node_id: int) -> None:
        """Hard-kill one node (for fault tests): SIGKILL, no controlled shutdown."""
        node = self.node(node_id)
        if node.process:
            node.process.kill()
            node.process.wait()

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Stop one node cleanly (SIGTERM: controlled shutdown), SIGKILL after ``timeout``."""
        node = self.node(node_id)
        if node.process is None or node.process.poll() is not None:
            return
        node.process.terminate()
        try:
            node.process.wait(timeout)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()

    def start_node(self, node_id: int, timeout: float = 90.0) -> float:
        """Start a stopped or killed node again on the same ports and data directory;
        returns once it is ready (seconds it took)."""
        node = self.node(node_id)
        if node.process is not None and node.process.poll() is None:
            raise KafkaHarnessError(f"node {node_id} is still running")
        if port_open(node.port):
            raise KafkaHarnessError(f"port {node.port} of node {node_id} is taken")
        t0 = time.monotonic()
        _launch(node)
        try:
            _wait_ready(Cluster(self.workdir, [node]), t0 + timeout)
        except BaseException:
            self.stop_node(node_id, timeout=5)
            raise
        return time.monotonic() - t0


def _properties(node: Node, nodes: Sequence[Node]) -> str:
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    rf = min(3, len(nodes))
    listeners = f"PLAINTEXT://127.0.0.1:{node.port}"
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    sasl: list[str] = []
    if node.sasl_port is not None:
        # Clients authenticate with SCRAM-SHA-512 on this listener; the brokers keep talking
        # to each other on PLAINTEXT. The users' credentials are written into the metadata
        # log at format time (``--add-scram``); no authorizer: an authenticated user may do
        # anything, a wrong password is refused at the handshake.
        listeners += f",SASL_PLAINTEXT://127.0.0.1:{node.sasl_port}"
        protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        sasl = [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
    if node.sasl_ssl_port is not None:
        # The same logins over TLS; the key and certificate chain in one PEM file (KIP-651).
        listeners += f",SASL_SSL://127.0.0.1:{node.sasl_ssl_port}"
        protocols += ",SASL_SSL:SASL_SSL"
        tls = node.data_dir.parent / "tls"
        sasl += [
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={tls / 'broker-keystore.pem'}",
        ]
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners={listeners},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners={listeners}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            *sasl,
            f"log.dirs={node.data_dir}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={min(2, rf)}",
            f"default.replication.factor={rf}",
            f"min.insync.replicas={min(2, rf)}",
            "offsets.topic.num.partitions=4",
            "num.partitions=4",
            "auto.create.topics.enable=true",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "",
        ]
    )


def start(
    workdir: Path = DEFAULT_WORKDIR,
    brokers: int = 1,
    base_port: int | None = None,
    timeout: float = 90.0,
    heap: str = "384m",
    sasl_users: dict[str, str] | None = None,
) -> Cluster:
    """Format fresh storage and start ``brokers`` nodes; returns once all are ready.
    ``sasl_users`` (name -> password) adds a SASL_PLAINTEXT listener per node on a free
    port (``Cluster.sasl_bootstrap``) where those users log in with SCRAM-SHA-512."""
    if brokers not in (1, 3):
        raise KafkaHarnessError("brokers must be 1 or 3")
    libs = fetch()
    java = shutil.which("java")
    assert java is not None  # checked by fetch()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    nodes = []
    for i in range(brokers):
        if base_port is None:
            port, cport = free_port(), free_port()
        else:
            port, cport = base_port + 2 * i, base_port + 2 * i + 1
            for p in (port, cport):
                if port_open(p):
                    raise KafkaHarnessError(f"port {p} is already in use (another Kafka?)")
        nodes.append(
            Node(i + 1, port, cport, workdir / f"broker-{i + 1}.log", workdir / f"data-{i + 1}")
        )
        if sasl_users:
            nodes[-1].sasl_port = free_port()
            if shutil.which("openssl") is not None:
                nodes[-1].sasl_ssl_port = free_port()
    cluster = Cluster(workdir, nodes)
    if any(n.sasl_ssl_port is not None for n in nodes):
        _make_certificates(workdir / "tls")
    cluster_id = new_cluster_id()
    classpath = f"{libs}/*"
    jvm = [
        java,
        f"-Xmx{heap}",
        "-Xms128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J}",
        "-cp",
        classpath,
    ]
    t0 = time.monotonic()
    for node in nodes:
        props = workdir / f"server-{node.node_id}.properties"
        props.write_text(_properties(node, nodes), encoding="utf-8")
        fmt = subprocess.run(
            # "--cluster-id=": a random id can start with "-" (1 in 32), which the tool's
            # argument parser would read as an option.
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(props),
                *_scram_args(sasl_users or {}),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaHarnessError(f"storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
    for node in nodes:
        node.argv = [*jvm, "kafka.Kafka", str(workdir / f"server-{node.node_id}.properties")]
        _launch(node)
    try:
        _wait_ready(cluster, t0 + timeout)
    except BaseException:
        cluster.stop()
        raise
    cluster.started_seconds = time.monotonic() - t0
    return cluster


def _make_certificates(tls: Path) -> None:
    """A throw-away CA and a broker certificate for 127.0.0.1 (valid 2 days), with openssl:
    ``ca.pem`` for clients, ``broker-keystore.pem`` (key + chain) for the brokers."""
    tls.mkdir(parents=True)
    (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=localkafka test CA", "-keyout", "ca.key", "-out", "ca.pem"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", "broker.key", "-out", "broker.csr"],
        ["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.pem"],
    ]  # fmt: skip
    for args in steps:
        proc = subprocess.run(
            ["openssl", *args], cwd=tls, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise KafkaHarnessError(f"openssl {args[0]} failed: {proc.stderr[-1000:]}")
    (tls / "broker-keystore.pem").write_text(
        (tls / "broker.key").read_text() + (tls / "broker.pem").read_text()
    )


def _scram_args(users: dict[str, str]) -> list[str]:
    """StorageTool arguments that create SCRAM-SHA-512 credentials at format time."""
    args = []
    for name, password in users.items():
        if not name.isidentifier() or any(c in password for c in ",[]="):
            raise KafkaHarnessError(f"SCRAM user {name!r}: use plain names and passwords")
        args.append(f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]")
    return args


def _launch(node: Node) -> None:
    """Start the node's process, its output appended to its log (a restart keeps the
    earlier run's lines); readiness counts only lines written from now on."""
    node.log_offset = node.log_file.stat().st_size if node.log_file.exists() else 0
    with node.log_file.open("ab") as log:
        node.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            node.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(cluster: Cluster, deadline: float) -> None:
    pending = list(cluster.nodes)
    while pending:
        for node in list(pending):
            assert node.process is not None
            if node.process.poll() is not None:
                raise KafkaHarnessError(
                    f"broker {node.node_id} exited with {node.process.returncode}; "
                    f"log: {node.log_file}\n{cluster.tail_logs()}"
                )
            text = _read_from(node.log_file, node.log_offset)
            if READY_LINE in text and port_open(node.port):
                pending.remove(node)
        if time.monotonic() > deadline:
            raise KafkaHarnessError(
                f"Kafka not ready before the timeout; logs: {cluster.log_files}\n"
                f"{cluster.tail_logs()}"
            )
        time.sleep(0.2)


def _read_from(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


# --- background mode for `make kafka` -------------------------------------------------


def _pidfile(workdir: Path) -> Path:
    return workdir / "pids"


def cmd_start(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    if _running_pids(workdir):
        print(f"Kafka already running (pids in {_pidfile(workdir)}); `make kafka-stop` first")
        return 1
    users = dict(args.sasl)
    cluster = start(
        workdir,
        brokers=args.brokers,
        base_port=args.port,
        timeout=args.timeout,
        sasl_users=users or None,
    )
    pids = [str(n.process.pid) for n in cluster.nodes if n.process]
    _pidfile(workdir).write_text("\n".join(pids) + "\n")
    print(f"Apache Kafka {kafka_version()} (KRaft) ready in {cluster.started_seconds:.1f}s")
    print(f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}")
    if users:
        print(
            f"SASL_PLAINTEXT (SCRAM-SHA-512, users {', '.join(users)}): "
            f"KAFKA_BOOTSTRAP_SERVERS={cluster.sasl_bootstrap}"
        )
        if any(n.sasl_ssl_port for n in cluster.nodes):
            print(
                f"SASL_SSL (same users, CA {cluster.ca_file}): "
                f"KAFKA_BOOTSTRAP_SERVERS={cluster.sasl_ssl_bootstrap}"
            )
    print(f"logs: {', '.join(str(p) for p in cluster.log_files)}")
    return 0


def _running_pids(workdir: Path) -> list[int]:
    path = _pidfile(workdir)
    if not path.exists():
        return []
    alive = []
    for line in path.read_text().split():
        try:
            os.kill(int(line), 0)
            alive.append(int(line))
        except (ProcessLookupError, ValueError):
            continue
    return alive


def cmd_stop(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    pids = _running_pids(workdir)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _running_pids(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _running_pids(workdir):
        os.kill(pid, signal.SIGKILL)
    _pidfile(workdir).unlink(missing_ok=True)
    print(f"stopped {len(pids)} broker(s)" if pids else "no local Kafka running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    pids = _running_pids(Path(args.workdir))
    print(f"running: {pids}" if pids else "not running")
    return 0 if pids else 1


def _user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise argparse.ArgumentTypeError(f"expected USER:PASSWORD, got {text!r}")
    return name, password


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars with Maven")
    p_start = sub.add_parser("start", help="start in the background")
    p_start.add_argument("--brokers", type=int, default=1, choices=(1, 3))
    p_start.add_argument("--port", type=int, default=9092, help="first listener port")
    p_start.add_argument("--timeout", type=float, default=120.0)
    p_start.add_argument(
        "--sasl",
        type=_user,
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="add SASL_PLAINTEXT and SASL_SSL listeners (SCRAM-SHA-512) on free ports with "
        "this user (repeatable)",
    )
    for name in ("start", "stop", "status"):
        target = p_start if name == "start" else sub.add_parser(name)
        target.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            if not (LIBS / f".complete-{kafka_version()}").exists():
                print(f"fetching the Kafka {kafka_version()} jars with Maven (once)...", flush=True)
            print(f"Kafka {kafka_version()} jars in {fetch()}")
            return 0
        return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status}[args.cmd](args)
    except KafkaHarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
