"""The README and docs stay true: every setting, metric, command and topic is documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from stream_app.cli import COMMANDS
from stream_app.metrics import Metrics
from stream_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    for name in Settings.model_fields:
        env = (
            "KAFKA_BOOTSTRAP_SERVERS"
            if name == "kafka_bootstrap_servers"
            else f"STREAM_APP_{name.upper()}"
        )
        assert f"`{env}`" in README, f"README configuration table lacks {env}"


def test_readme_lists_no_setting_that_does_not_exist() -> None:
    known = {f"STREAM_APP_{n.upper()}" for n in Settings.model_fields}
    for env in set(re.findall(r"`(STREAM_APP_[A-Z0-9_]+)", README)):
        assert env in known, f"README documents unknown setting {env}"


def test_every_metric_is_in_the_readme() -> None:
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in README, f"README metrics table lacks {name}"


def test_every_command_is_in_the_readme() -> None:
    for cmd in COMMANDS:
        assert f"stream-app {cmd}" in README


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README and "make test" in README
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_asyncapi_describes_the_topics_and_its_schemas_exist() -> None:
    doc = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    addresses = {c["address"] for c in doc["channels"].values()}
    defaults = Settings()
    assert {defaults.topic_clickstream, defaults.topic_dlq, defaults.topic_training} <= addresses
    for channel in doc["channels"].values():
        for message in channel["messages"].values():
            ref = message["payload"].get("$ref")
            if ref:
                assert (ROOT / "docs" / ref).resolve().is_file(), ref


def test_contract_copy_matches_the_shared_contract() -> None:
    shared = ROOT.parent / "shared" / "EVENTS.md"
    if shared.exists():  # beside the repo in this workspace; not shipped with a clone
        assert (ROOT / "docs/events.md").read_text().startswith(shared.read_text())
