"""Kafka plumbing: partitioning, sends and their delivery futures, clients, topics, the
producer and the security mapping."""
