"""Console entry point ``stream-app``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from stream_app.errors import StreamAppError
from stream_app.settings import parse_duration

COMMANDS = ("worker", "validate", "schema", "evaluate", "generate", "replay", "topics")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-app",
        description="Real-time churn scoring and retention interventions on Kafka.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worker", help="run the Faust worker (consumes the clickstream topic)")
    p.add_argument("--web-port", type=int, help="override STREAM_APP_WEB_PORT")

    p = sub.add_parser("validate", help="check a JSONL file against the event contract")
    p.add_argument("file", type=Path)

    p = sub.add_parser("schema", help="write the JSON Schema files of events and outputs")
    p.add_argument("--out", type=Path, default=Path("schemas/json"))

    p = sub.add_parser("evaluate", help="replay a JSONL file through the engine offline")
    p.add_argument("file", type=Path)
    p.add_argument("--horizon", type=_duration, help="label horizon, e.g. 30d")
    p.add_argument(
        "--warmup", type=_duration, help="no labels from the first WARMUP of the file (default 30d)"
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

    p = sub.add_parser("replay", help="send a JSONL file's events to the clickstream topic")
    p.add_argument("file", type=Path)
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0 = max)")
    p.add_argument(
        "--send-invalid",
        action="store_true",
        help="send invalid lines too (they land in the dead-letter topic)",
    )

    sub.add_parser("topics", help="create the topics with the configured partition counts")

    p = sub.add_parser("generate", help="write synthetic clickstream traffic with ground truth")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, required=True)
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
    return parser


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
            from stream_app.report import write_report

            for path in write_report(run, args.report_dir):
                print(f"evaluate: wrote {path}", file=sys.stderr)
        return 0
    if args.command in ("replay", "topics"):
        from stream_app.settings import load_settings
        from stream_app.topics import ensure_topics

        settings = load_settings()
        topics = ensure_topics(settings)
        if args.command == "topics":
            print(json.dumps(topics, sort_keys=True))
            return 0
        from stream_app.producer import ChurnProducer, replay

        with ChurnProducer(
            settings.kafka_bootstrap_servers, settings.topic_clickstream, settings.max_message_bytes
        ) as producer:
            stats = replay(args.file, producer, args.rate, skip_invalid=not args.send_invalid)
        print(json.dumps(stats))
        return 0
    if args.command == "generate":
        from stream_app.generate import generate_cli

        return generate_cli(args)
    raise AssertionError(args.command)


def _worker(args: argparse.Namespace) -> int:
    from stream_app.app import create_app
    from stream_app.settings import load_settings

    overrides: dict[str, object] = {}
    if args.web_port:
        overrides["web_port"] = args.web_port
    settings = load_settings(**overrides)
    from stream_app.topics import ensure_topics

    ensure_topics(settings)
    app = create_app(settings)
    from stream_app.agents.model_sync import preload

    deps = app.deps
    assert deps.model is not None
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
        settings.log_level,
        "--web-port",
        str(settings.web_port),
        "--web-host",
        settings.web_host,
    ]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
