"""The local Kafka harness: a cluster id the storage tool never mistakes for an option."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import _localkafka

ROOT = Path(__file__).resolve().parents[2]


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    lk = _localkafka()
    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))  # URL-safe base64 of 0xf8.. starts with '-'
    plain = uuid.UUID(bytes=b"\x10" + bytes(15))
    draws = iter([dash, dash, plain])
    monkeypatch.setattr(lk.uuid, "uuid4", lambda: next(draws))
    cluster_id = lk.new_cluster_id()
    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA" and len(cluster_id) == 22
    monkeypatch.undo()
    assert not any(lk.new_cluster_id().startswith("-") for _ in range(2000))


def _fake_tools(bin_dir: Path) -> None:
    """A `mvn` that talks like Maven on a first run (escape codes, [INFO] Copying lines)
    and writes a jar; a `java` that exists."""
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\n"
        "printf '\\033[0m\\033[0m[INFO] Scanning for projects...\\n'\n"
        "for i in 1 2 3; do printf '[INFO] Copying kafka-%s.jar\\n' $i; done\n"
        'for a in "$@"; do case $a in -DoutputDirectory=*) touch "${a#*=}/kafka.jar";; '
        "esac; done\n"
    )
    (bin_dir / "java").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)


def test_a_first_fetch_prints_one_line_of_its_own_and_no_maven_noise(tmp_path: Path) -> None:
    _fake_tools(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "STREAM_APP_KAFKA_LIBS": str(tmp_path / "libs"),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools/kafka/localkafka.py"), "fetch"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout + done.stderr
    assert (tmp_path / "libs" / "kafka.jar").is_file()  # Maven did run
    assert "[INFO]" not in out and "\x1b" not in out, out
    assert out.startswith("fetching the Kafka") and len(out.splitlines()) == 2


def test_ctrl_c_of_make_demo_is_a_stop_not_an_error(tmp_path: Path) -> None:
    """The demo exits 130 on Ctrl-C; make must not turn that into 'Error 130'."""
    fake = tmp_path / "demo-python"
    fake.write_text("#!/bin/sh\nexit 130\n")
    fake.chmod(0o755)
    ok = tmp_path / "ok"
    ok.write_text("#!/bin/sh\nexit 0\n")
    ok.chmod(0o755)
    done = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "demo", f"PY={fake}", f"PYTHON={ok}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "Error 130" not in done.stderr and "demo stopped (Ctrl-C)" in done.stdout
    fake.write_text("#!/bin/sh\nexit 3\n")  # a real failure still fails
    failed = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "demo", f"PY={fake}", f"PYTHON={ok}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
