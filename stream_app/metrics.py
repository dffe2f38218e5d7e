"""Every Prometheus metric in one place, registered on a registry that is passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The worker's metrics. Label values come from small fixed sets (no user ids)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "churn_events",
            "Valid events applied to user state, by event type.",
            ["event_type"],
            registry=r,
        )
        self.invalid = Counter(
            "churn_events_invalid",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "churn_events_duplicate", "Events skipped because their event_id was seen.", registry=r
        )
        self.unknown_fields = Counter(
            "churn_events_unknown_fields",
            "Unknown top-level fields ignored in otherwise valid events.",
            registry=r,
        )
        self.rerouted = Counter(
            "churn_events_rerouted",
            "Events forwarded to the partition of their user_id (key did not match).",
            registry=r,
        )
        self.scores = Counter(
            "churn_scores",
            "Users scored, by trigger (event or silence deadline).",
            ["trigger"],
            registry=r,
        )
        self.risk = Histogram(
            "churn_risk_score",
            "Distribution of churn probabilities at scoring time.",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
            registry=r,
        )
        self.labels = Counter(
            "churn_labels",
            "Training examples resolved, by label (1 = churned).",
            ["label"],
            registry=r,
        )
        self.model_version = Gauge(
            "churn_model_version", "Version of the model this worker scores with.", registry=r
        )
        self.model_ready = Gauge(
            "churn_model_ready",
            "1 when the learned model scores, 0 for the cold-start prior.",
            registry=r,
        )
        # One name per number: each gauge is the /model "metrics" key of the same name,
        # over the same labels (the learner's last STREAM_APP_ROLLING_WINDOW, live).
        self.model_rolling_auc = Gauge(
            "churn_model_rolling_auc",
            "ROC AUC of the scores served (by whatever scored them: the cold-start prior or "
            "an earlier model) on the learner's last ROLLING_WINDOW labels, as of the "
            "snapshot in use (/model metrics.rolling_auc).",
            registry=r,
        )
        self.model_challenger_auc = Gauge(
            "churn_model_challenger_auc",
            "ROC AUC of the learned model, prequential (each label scored before it is "
            "learned), on the learner's last ROLLING_WINDOW labels, as of the snapshot in "
            "use (/model metrics.challenger_auc).",
            registry=r,
        )
        self.model_prior_auc = Gauge(
            "churn_model_prior_auc",
            "ROC AUC of the cold-start prior (recency alone) on the same labels as "
            "churn_model_challenger_auc (/model metrics.prior_auc).",
            registry=r,
        )
        self.model_rolling_logloss = Gauge(
            "churn_model_rolling_logloss",
            "Log loss of the scores served, on the learner's last ROLLING_WINDOW labels, as "
            "of the snapshot in use (/model metrics.rolling_logloss).",
            registry=r,
        )
        self.model_snapshot_time = Gauge(
            "churn_model_snapshot_timestamp_seconds",
            "Creation time of the latest model snapshot this worker accepted (0: none yet).",
            registry=r,
        )
        self.model_rejected = Counter(
            "churn_model_rejected",
            "Model snapshots refused (old model kept), by reason.",
            ["reason"],
            registry=r,
        )
        self.model_labels = Counter(
            "churn_model_labels",
            "Training examples the learner learned from (this worker, while it owns learning).",
            registry=r,
        )
        self.model_drift = Counter(
            "churn_model_drift",
            "Drift alarms (ADWIN on the prequential log loss) raised by the learner.",
            registry=r,
        )
        self.training_skipped = Counter(
            "churn_training_skipped",
            "Training examples the learner did not learn from, by reason.",
            ["reason"],
            registry=r,
        )
        self.snapshots_published = Counter(
            "churn_model_snapshots_published",
            "Model snapshots this worker's learner published.",
            registry=r,
        )
        self.learner_active = Gauge(
            "churn_learner_active",
            "1 on the worker that owns the training partition and learns, else 0.",
            registry=r,
        )
        self.interventions = Counter(
            "churn_interventions",
            "Flagged users by action, risk tier and group (treatment: sent; holdout: not).",
            ["action", "tier", "group"],
            registry=r,
        )
        self.suppressed = Counter(
            "churn_decisions_suppressed",
            "Spikes not acted on because of a limit: breaker_open, cooldown, user_cap, budget.",
            ["reason"],
            registry=r,
        )
        self.budget_exhausted = Counter(
            "churn_budget_exhausted",
            "Spikes suppressed because the partition's intervention budget was spent.",
            registry=r,
        )
        self.circuit_open = Gauge(
            "churn_circuit_open",
            "1 while the partition's circuit breaker holds interventions back.",
            ["partition"],
            registry=r,
        )
        self.uplift = Gauge(
            "churn_uplift",
            "Churn rate of flagged holdout users minus flagged treated users (learner's "
            "worker; NaN until both groups have resolved examples).",
            ["bound"],
            registry=r,
        )
        self.uplift_examples = Counter(
            "churn_uplift_examples",
            "Resolved examples of flagged users, by group and label, behind churn_uplift.",
            ["group", "label"],
            registry=r,
        )
        self.bandit_mean = Gauge(
            "churn_bandit_posterior_mean",
            "Posterior mean retention of each action per bandit segment, from the model "
            'snapshot in use (prior included, without the rules\' bonus); segment="prior": '
            "a segment with no outcome yet.",
            ["segment", "action"],
            registry=r,
        )
        self.stream_time = Gauge(
            "churn_stream_time_seconds",
            "Highest event time seen, per partition.",
            ["partition"],
            registry=r,
        )
        self.watermark_lag = Gauge(
            "churn_event_lag_seconds",
            "Wall clock minus stream time, per partition.",
            ["partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "churn_consumer_lag_messages",
            "Clickstream messages after the group's committed offset, per partition this "
            "worker owns (sum over workers: the group's lag).",
            ["partition"],
            registry=r,
        )
        self.timers = Gauge(
            "churn_timers_scheduled",
            "Users with a pending event-time deadline, per partition.",
            ["partition"],
            registry=r,
        )
        self.process_seconds = Histogram(
            "churn_process_seconds",
            "Time to handle one clickstream message (a batch's time over its records, observed "
            "once per batch).",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0),
            registry=r,
        )

        self.erasures = Counter(
            "churn_erasures",
            "Erasure requests carried out, by whether this worker held state for the user.",
            ["state"],
            registry=r,
        )
        self.erased_events = Counter(
            "churn_erasure_events_dropped",
            "Clickstream events of an erased user dropped because the erasure marker covers "
            "them (sent before the request, read after it).",
            registry=r,
        )
        self.partition_stalled = Gauge(
            "churn_partition_stalled",
            "1 while an owned clickstream partition has lag and no committed progress for "
            "STREAM_APP_STALL_TIMEOUT (the consumer is stuck).",
            ["partition"],
            registry=r,
        )
        self.state_writes = Counter(
            "churn_state_writes",
            "User states written to the users table's changelog (once per user per flush).",
            registry=r,
        )
        self.flushes = Counter(
            "churn_state_flushes",
            "Write-back flushes: the broker confirmed every record of the flushed batches, "
            "whose offsets then became committable.",
            registry=r,
        )
        self.write_failures = Counter(
            "churn_write_failures",
            "Records the broker refused (state, outputs): each stops the worker before any "
            "offset passes it.",
            registry=r,
        )
        self.produce_to_apply = Histogram(
            "churn_produce_to_apply_seconds",
            "Wall-clock time from a clickstream record's produce time (Kafka CreateTime) to "
            "the end of the batch that applied it, per batch (its oldest record): how far "
            "behind live the worker runs.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0),
            registry=r,
        )
        self.batch_size = Histogram(
            "churn_batch_records",
            "Records per clickstream batch applied by the score service.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
