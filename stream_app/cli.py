"""Console entry point ``stream-app``."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from stream_app.errors import StreamAppError
from stream_app.settings import parse_duration

COMMANDS = (
    "worker",
    "validate",
    "schema",
    "evaluate",
    "generate",
    "replay",
    "topics",
    "config",
    "erase",
    "policy-replay",
)

EPILOG = """configuration: every setting comes from the environment, KAFKA_BOOTSTRAP_SERVERS
and STREAM_APP_<NAME> (README "Configuration"); `stream-app config` prints the effective
values, secrets masked. Docs: README.md, docs/."""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    try:
        return version("churn-stream")
    except PackageNotFoundError:  # running from a checkout without an install
        return "unknown"


class _Help(argparse.RawDescriptionHelpFormatter):
    """Each option's default in its help (when it has a meaningful one); the epilog as
    written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        # Identity, not ``in``: 0 and 0.0 equal False, and "0" is a default worth showing.
        if default is None or default is False or default is argparse.SUPPRESS:
            return text
        if "%(default)" in text or "(default:" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-app",
        description="Real-time churn scoring and retention interventions on Kafka.",
        epilog=EPILOG,
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=text, description=text, epilog=EPILOG, formatter_class=_Help
        )

    p = command(
        "worker",
        "run a worker: scores the clickstream, learns (on the worker that owns the training "
        "partition), emits interventions, serves /metrics and the HTTP API",
    )
    p.add_argument(
        "--web-port",
        type=int,
        help="port of /metrics and the API (default: STREAM_APP_WEB_PORT, 6066 unset)",
    )

    p = command("validate", "check a JSONL file against the event contract (exit 1 if bad)")
    p.add_argument("file", type=Path, help="JSON Lines file of events")

    p = command("schema", "write the JSON Schema files of events and outputs")
    p.add_argument("--out", type=Path, default=Path("schemas/json"), help="output folder")

    p = command("evaluate", "replay a JSONL file through the engine offline (prequential AUC)")
    p.add_argument("file", type=Path, help="JSON Lines file of events, in any order")
    p.add_argument(
        "--horizon",
        type=_duration,
        help="label horizon, e.g. 30d (default: STREAM_APP_HORIZON, 30d unset)",
    )
    p.add_argument(
        "--warmup",
        type=_duration,
        help="no labels from the first WARMUP of the file "
        "(default: STREAM_APP_EVAL_WARMUP, 30d unset)",
    )
    p.add_argument("--predictions-out", type=Path, help="write every labelled prediction")
    p.add_argument("--scores-at", help="RFC 3339 time: score every user seen before it")
    p.add_argument("--scores-out", type=Path, help="where --scores-at writes (JSONL)")
    p.add_argument("--report-dir", type=Path, help="write PNG plots and a markdown summary")
    p.add_argument(
        "--decisions-out",
        type=Path,
        help="write every policy decision (one Decision JSON a line, treatment and holdout)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")

    p = command("replay", "send a JSONL file's events to the clickstream topic, keyed by user_id")
    p.add_argument("file", type=Path, help="JSON Lines file of events")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0 = max)")
    p.add_argument(
        "--send-invalid",
        action="store_true",
        help="send invalid lines too (they land in the dead-letter topic)",
    )

    command(
        "topics",
        "create the topics with the configured partition counts: clickstream, "
        "clickstream.dlq, retention.decisions, retention.interventions, user.erasure, "
        "user.erasure.audit and Faust's <app_id>-users-changelog (compacted) with "
        "STREAM_APP_TOPIC_PARTITIONS each; churn.training, churn.model (compacted) and "
        "Faust's <app_id>-__assignor-__leader with 1. Names from STREAM_APP_TOPIC_* and "
        "STREAM_APP_APP_ID, replication and min.insync.replicas from "
        "STREAM_APP_TOPIC_REPLICATION and _MIN_INSYNC_REPLICAS",
    )
    command("config", "print the effective settings as JSON (secrets masked)")

    p = command(
        "erase",
        "ask the workers to forget users (right to erasure): sends one request per user to "
        "STREAM_APP_TOPIC_ERASURE, keyed by user_id; each worker that held a user publishes "
        "an audit record to STREAM_APP_TOPIC_ERASURE_AUDIT (docs/privacy.md)",
    )
    p.add_argument("user_ids", nargs="+", metavar="USER_ID", help="users to forget")
    p.add_argument("--requested-by", help="who asked (a ticket id, a tool): kept in the audit")

    p = command(
        "generate", "write synthetic clickstream traffic with ground truth (<out>.truth.jsonl)"
    )
    p.add_argument("--users", type=int, default=1000, help="number of users")
    p.add_argument("--days", type=int, default=60, help="days of traffic")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same file)")
    p.add_argument("--out", type=Path, required=True, help="JSON Lines file to write")
    p.add_argument("--start", default="2026-01-01T00:00:00Z", help="first day (RFC 3339)")
    p.add_argument("--malformed", type=float, default=0.0, help="share of malformed lines")
    p.add_argument("--duplicates", type=float, default=0.0, help="share of duplicate events")
    p.add_argument(
        "--treatment-effect",
        type=float,
        default=0.0,
        metavar="Q",
        help="an intervened churner is saved with probability Q: writes a tagged saved "
        "path for the evaluator (docs/policy.md); 0 keeps the file as before",
    )
    p.add_argument(
        "--action-effects",
        type=Path,
        metavar="JSON",
        help="save probability per (segment, action) instead of one Q: which action saves "
        "which churner; the truth file says (deploy/action_effects.example.json)",
    )

    p = command(
        "policy-replay",
        "evaluate the bandit chooser offline on a CSV of a logged randomised experiment by "
        "the replay method (Li et al., WSDM 2011); prints one JSON line (docs/policy.md)",
    )
    p.add_argument("file", type=Path, help="CSV with a header, one logged decision a row")
    p.add_argument("--arm", required=True, metavar="COLUMN", help="the arm each row was given")
    p.add_argument("--reward", required=True, metavar="COLUMN", help="its 0/1 outcome")
    p.add_argument(
        "--context",
        type=_columns,
        metavar="COL,...",
        help="columns whose values make the chooser's segment (default: one segment)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations and draws")
    p.add_argument("--runs", type=int, default=10, help="permutations of the rows")
    p.add_argument(
        "--floor", type=float, default=0.01, help="exploration share per arm (bandit.floor)"
    )
    return parser


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except StreamAppError as exc:
        print(f"stream-app: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "worker":
        return _worker(args)
    if args.command == "schema":
        from schemas.export import write

        for path in write(args.out):
            print(path)
        return 0
    if args.command == "validate":
        from stream_app.offline import validate_file

        summary = validate_file(args.file, sys.stderr)
        print(json.dumps(summary, sort_keys=True))
        return 0 if summary["invalid"] == 0 else 1
    if args.command == "evaluate":
        from stream_app.offline import evaluate_cli

        run = evaluate_cli(args)
        if args.report_dir is not None:
            from stream_app.offline.report import write_report

            for path in write_report(run, args.report_dir):
                print(f"evaluate: wrote {path}", file=sys.stderr)
        return 0
    if args.command in ("replay", "topics"):
        from stream_app.kafka.topics import check_reachable, ensure_topics
        from stream_app.settings import load_settings

        settings = load_settings()
        if args.command == "replay":  # a client: fail fast, create no internal topic
            check_reachable(settings)
        topics = ensure_topics(settings, internal=args.command == "topics")
        if args.command == "topics":
            print(json.dumps(topics, sort_keys=True))
            return 0
        from stream_app.kafka.producer import ChurnProducer, replay
        from stream_app.kafka.security import kafka_python_options

        with ChurnProducer(
            settings.kafka_bootstrap_servers,
            settings.topic_clickstream,
            settings.max_message_bytes,
            **kafka_python_options(settings),
        ) as producer:
            stats = replay(args.file, producer, args.rate, skip_invalid=not args.send_invalid)
        print(json.dumps(stats))
        return 0
    if args.command == "erase":
        from stream_app.kafka.erase import send_erasures
        from stream_app.settings import load_settings

        for line in send_erasures(load_settings(), args.user_ids, args.requested_by):
            print(line)
        return 0
    if args.command == "config":
        from stream_app.core.policy.config import load_policy
        from stream_app.settings import load_settings

        settings = load_settings()
        load_policy(settings.policy_file)  # a broken policy file fails here, not at start
        print(json.dumps(settings.display(), indent=2, sort_keys=True))
        return 0
    if args.command == "policy-replay":
        from stream_app.offline.policy_replay import evaluate, read_log

        if args.runs < 1 or not 0 <= args.floor <= 0.2:
            raise StreamAppError("--runs must be >= 1 and --floor in [0, 0.2]")
        log = read_log(args.file, args.arm, args.reward, args.context or ())
        if log.first_error is not None:
            print(
                f"policy-replay: skipped {log.skipped} row(s); first: {log.first_error}",
                file=sys.stderr,
            )
        print(json.dumps(evaluate(log, seed=args.seed, runs=args.runs, floor=args.floor)))
        return 0
    if args.command == "generate":
        from stream_app.offline.generate import generate_cli

        return generate_cli(args)
    raise AssertionError(args.command)


def _worker(args: argparse.Namespace) -> int:
    from stream_app.app import create_app
    from stream_app.settings import load_settings

    overrides: dict[str, object] = {}
    if args.web_port:
        overrides["web_port"] = args.web_port
    settings = load_settings(**overrides)
    from stream_app.kafka.topics import ensure_topics

    # create_app first: its start-up checks (pinned versions, API token) need no broker
    app = create_app(settings)
    ensure_topics(settings)
    from stream_app.agents.model_sync import preload

    deps = app.deps
    read = preload(settings, deps.model)
    print(
        f"stream-app worker: read {read} model snapshot message(s); scoring with "
        f"v{deps.engine.scorer.version}",
        file=sys.stderr,
    )
    sys.argv = [
        "stream-app",
        "worker",
        "--loglevel",
        # Faust's worker spells it "warn"; the setting takes the logging module's names.
        {"warning": "warn"}.get(settings.log_level, settings.log_level),
        "--web-port",
        str(settings.web_port),
        "--web-host",
        settings.web_host,
    ]
    # The imports and start-up objects are frozen out of the cyclic GC, so its full
    # collections scan the user states only. (Raising the thresholds as evaluate does cut
    # the pauses further but let garbage pile up: 1,011 bytes of RSS per added user on
    # rocksdb:// in test_large_state, against its 1 KB bound.)
    gc.collect()
    gc.freeze()
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
