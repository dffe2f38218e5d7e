"""The train flag survives the training topic, so the live learner learns what offline does."""

from __future__ import annotations

from schemas.outputs import TrainingExample
from stream_app.agents.learner import label_from
from stream_app.core.labels import Label, label_message


def test_an_example_judged_but_not_learned_stays_so_across_the_topic() -> None:
    label = Label("u", 1767614400.0, 1768478400.0, 1, 0.7, {"x": 1.0}, "none", 3, train=False)
    wire = label_message(label).model_dump_json()
    assert label_from(TrainingExample.model_validate_json(wire)).train is False


def test_examples_written_before_the_flag_are_learned() -> None:
    label = Label("u", 1767614400.0, 1768478400.0, 0, 0.2, {"x": 1.0}, "none", 3)
    doc = label_message(label).model_dump(mode="json")
    del doc["train"]
    assert label_from(TrainingExample.model_validate(doc)).train is True
