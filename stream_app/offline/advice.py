"""Why an offline evaluation judged nothing, and settings that would judge something.

A label needs an example scored after the warm-up and a horizon of event time after it
inside the file: a file shorter than warm-up + horizon yields ``"labels": 0`` and
``"auc": null``, which read as a broken model rather than as the wrong settings.
"""

from __future__ import annotations

from stream_app.settings import format_duration

DAY = 86400.0


def _days(seconds: float) -> str:
    return format_duration(max(DAY, round(seconds / DAY) * DAY))


def no_labels_advice(span: float | None, warmup: float, horizon: float) -> str | None:
    """A sentence for an evaluation with no labels (None when the settings fit the file):
    the file's span of event time (seconds; None without a valid event), the warm-up and
    horizon it needs, and values that leave about a third of the span to judge."""
    if span is None:
        return "no labels: the file holds no valid event (see invalid_reasons)"
    if warmup + horizon < span:
        return None
    says = (
        f"no labels: the file spans {span / DAY:.1f} days of event time, but the warm-up "
        f"({format_duration(warmup)}) plus the horizon ({format_duration(horizon)}) need "
        f"{(warmup + horizon) / DAY:.1f}: nothing is scored and resolved inside the file"
    )
    if span < 3 * DAY:
        return says + "; a file of a few days cannot be judged: use a longer one"
    if horizon < span * 2 / 3:  # keep the horizon, shorten the warm-up
        fit = f"--warmup {_days((span - horizon) / 3)}"
    else:
        fit = f"--horizon {_days(span / 3)} --warmup {_days(span / 3)}"
    return f"{says}. Try {fit} (STREAM_APP_HORIZON, STREAM_APP_EVAL_WARMUP)"
