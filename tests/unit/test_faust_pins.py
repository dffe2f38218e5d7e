"""The Faust patches run only on the versions they were written against: the installed
faust-streaming, aiokafka and mode-streaming are checked at start-up, pinned exactly in
pyproject.toml, and any other version stops the worker with a message that says what to do."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from stream_app.cli import main
from stream_app.errors import DependencyError
from stream_app.runtime import faust_fixes

ROOT = Path(__file__).resolve().parents[2]


def _versions(**changed: str) -> dict[str, str]:
    return {**faust_fixes.WRITTEN_FOR, **{k.replace("_", "-"): v for k, v in changed.items()}}


def test_the_installed_versions_are_the_ones_the_patches_were_written_for() -> None:
    faust_fixes.check_versions()  # the real importlib.metadata lookup: raises if not


def test_pyproject_pins_exactly_those_versions() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, version in faust_fixes.WRITTEN_FOR.items():
        assert f"{name}=={version}" in deps, f"pyproject.toml must pin {name}=={version}"


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"faust_streaming": "0.15.4"}, "faust-streaming 0.15.4"),
        ({"aiokafka": "0.13.0"}, "aiokafka 0.13.0"),
        ({"mode_streaming": "not installed"}, "mode-streaming not installed"),
    ],
)
def test_another_version_is_refused_with_what_to_do(changed: dict[str, str], named: str) -> None:
    versions = _versions(**changed)
    with pytest.raises(DependencyError) as err:
        faust_fixes.check_versions(versions.__getitem__)
    text = str(err.value)
    assert named in text
    assert "pip install faust-streaming==0.15.3 aiokafka==0.14.0 mode-streaming==0.7.1" in text
    assert "tests/integration/test_faust_fixes.py" in text  # how to upgrade instead


def test_the_worker_does_not_start_on_another_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(faust_fixes, "version", _versions(aiokafka="0.12.0").__getitem__)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    monkeypatch.setenv("STREAM_APP_DATA_DIR", str(tmp_path))
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stream-app: error: stream_app/runtime/faust_fixes.py patches")
    assert "found aiokafka 0.12.0" in err
