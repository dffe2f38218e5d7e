"""The topics the worker creates: Faust's own ones included, each with the replication and
min.insync.replicas settings (the broker-side check is tests/integration/
test_broker_faults.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.app import create_app
from stream_app.errors import ConfigError
from stream_app.kafka.topics import changelog_topic, leader_topic, topic_configs, topic_specs
from stream_app.settings import load_settings


def test_faust_internal_topic_names_are_the_ones_faust_builds(tmp_path: Path) -> None:
    settings = load_settings(app_id="names-check", data_dir=str(tmp_path), topic_partitions=6)
    app = create_app(settings)
    changelog = app.tables["users"].changelog_topic
    leader = app._leader_assignor._leader_topic  # type: ignore[attr-defined]
    specs = topic_specs(settings)
    # Created first by ensure_topics with Faust's own partitions and cleanup policy, so
    # that Faust finds them in place ("exists, skipping creation").
    assert changelog.get_topic_name() == changelog_topic(settings)
    assert specs[changelog_topic(settings)] == changelog.partitions == 6
    assert topic_configs(settings)[changelog_topic(settings)]["cleanup.policy"] == "compact"
    assert changelog.compacting
    assert leader.get_topic_name() == leader_topic(settings)
    assert specs[leader_topic(settings)] == leader.partitions == 1


def test_min_insync_replicas_goes_to_every_topic() -> None:
    settings = load_settings(topic_replication=3, topic_min_insync_replicas=2)
    configs = topic_configs(settings)
    assert set(configs) == set(topic_specs(settings))
    assert len(configs) == 10  # 8 of the app, Faust's changelog and leader topics
    assert all(c["min.insync.replicas"] == "2" for c in configs.values())
    assert configs[settings.topic_model]["cleanup.policy"] == "compact"


def test_unset_min_insync_replicas_leaves_the_broker_default() -> None:
    configs = topic_configs(load_settings())
    assert not any("min.insync.replicas" in c for c in configs.values())


def test_min_insync_replicas_above_the_replication_is_refused() -> None:
    with pytest.raises(ConfigError, match="STREAM_APP_TOPIC_MIN_INSYNC_REPLICAS"):
        load_settings(topic_replication=1, topic_min_insync_replicas=2)
