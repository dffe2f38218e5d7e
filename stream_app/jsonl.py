"""Reading JSON Lines files: the input of validate, evaluate and replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from stream_app.errors import InputFileError


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without newline) for every non-blank line."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield n, line
