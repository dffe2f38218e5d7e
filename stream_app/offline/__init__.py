"""The offline driver and its tools: replay and evaluate a JSONL file through the core
(evaluate), the report's figures, generated traffic with a known answer, the treatment
simulation, and the policy replay of a logged experiment."""

from stream_app.offline.evaluate import (
    EvaluateOptions,
    EvaluationRun,
    Replay,
    evaluate,
    evaluate_cli,
    validate_file,
)

__all__ = [
    "EvaluateOptions",
    "EvaluationRun",
    "Replay",
    "evaluate",
    "evaluate_cli",
    "validate_file",
]
