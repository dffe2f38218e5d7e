"""The local Kafka harness itself: three KRaft nodes with replication factor 3 survive the loss
of one broker (the base for the fault tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from tests.conftest import _localkafka
from tests.integration.conftest import wait_for


@pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
    reason="uses the local harness, not an external cluster",
)
def test_three_brokers_keep_serving_after_one_is_killed(tmp_path: Path) -> None:
    lk = _localkafka()
    cluster = lk.start(tmp_path / "k3", brokers=3)
    try:
        bootstrap = cluster.bootstrap.split(",")
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("rf3", 3, 3, topic_configs={"min.insync.replicas": "2"})])
        # metadata can lag the creation by a moment: wait for all three partitions
        parts = wait_for(
            lambda: (p := admin.describe_topics(["rf3"])[0]["partitions"]) and len(p) == 3 and p,
            30,
            "rf3 metadata",
        )
        admin.close()
        assert sorted(len(p["replica_nodes"]) for p in parts) == [3, 3, 3]

        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", retries=10, request_timeout_ms=15000
        )
        for i in range(30):
            producer.send("rf3", key=str(i).encode(), value=b"before")
        producer.flush(30)
        cluster.kill_node(2)
        for i in range(30):
            producer.send("rf3", key=str(i).encode(), value=b"after")
        producer.flush(60)
        producer.close()

        consumer = KafkaConsumer(
            "rf3",
            bootstrap_servers=[bootstrap[0], bootstrap[2]],
            auto_offset_reset="earliest",
            consumer_timeout_ms=15000,
            group_id=None,
        )
        values = [m.value for m in consumer]
        consumer.close()
        assert values.count(b"before") == 30 and values.count(b"after") == 30
    finally:
        cluster.stop()
