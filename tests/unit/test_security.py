"""Nothing that arrives over the network or from a file is unpickled or evaluated."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNSAFE = re.compile(
    r"\bimport (c?pickle|dill|marshal|shelve)\b|\bfrom (c?pickle|dill|marshal|shelve) import"
    r"|\b(c?pickle|dill|marshal)\.loads?\(|(?<![.\w])eval\(|(?<![.\w])exec\("
    r"|yaml\.load\((?![^)]*SafeLoader)"
)


def test_no_pickle_eval_exec_or_unsafe_yaml_in_the_packages() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in ("stream_app", "schemas")
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if UNSAFE.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == [], "\n".join(found)


def test_the_pattern_catches_what_it_should() -> None:
    for bad in (
        "pickle.loads(x)",
        "import pickle",
        "from dill import loads",
        "eval(s)",
        "x = exec(code)",
        "yaml.load(f)",
        "marshal.loads(b)",
    ):
        assert UNSAFE.search(bad), bad
    for fine in (
        "yaml.load(f, Loader=yaml.SafeLoader)",
        "evaluate(path)",
        "executor",
        '"""JSON (never pickle)"""',
        "model.eval()",
    ):
        assert not UNSAFE.search(fine), fine
