"""The schema compatibility rule (docs/events.md, "Compatibility"): within one version
`v`, a schema only gains optional fields; consumers ignore fields they do not know, so the
published schemas never forbid extra properties. Anything else is a new version: a new
schema file, frozen in schemas/compat/ when released."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from schemas.export import COMPAT_DIR, incompatibilities, schemas, signature
from schemas.outputs import Intervention

CURRENT = schemas()


def _released(name: str) -> dict[str, Any]:
    released: dict[str, Any] = json.loads((COMPAT_DIR / name).read_text())
    return released


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_every_schema_version_keeps_what_its_release_promised(name: str) -> None:
    assert (COMPAT_DIR / name).is_file(), f"{name}: a new version: freeze it when released"
    assert incompatibilities(_released(name), signature(CURRENT[name])) == []


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_published_schemas_let_consumers_ignore_unknown_fields(name: str) -> None:
    assert '"additionalProperties": false' not in json.dumps(CURRENT[name])


def test_decided_at_is_additive_so_messages_written_before_it_still_validate() -> None:
    doc = CURRENT["intervention.v1.schema.json"]
    assert "decided_at" in doc["properties"] and "decided_at" not in doc["required"]
    before = {
        "v": 1,
        "intervention_id": "i1",
        "decision_id": "d1",
        "user_id": "u1",
        "ts": "2026-01-05T12:00:00Z",
        "trigger": "silence",
        "p": 0.4,
        "tier": "high",
        "previous_tier": "low",
        "action": "win_back",
        "reasons": [{"name": "days_since_last_event", "value": 1.2}],
        "model_version": 3,
        "policy_version": "abc",
    }
    assert Intervention.model_validate(before).decided_at is None


def test_the_rule_catches_a_rename_a_retype_and_a_new_required_field() -> None:
    released = _released("intervention.v1.schema.json")
    renamed = copy.deepcopy(released)
    renamed["Reason"]["properties"]["feature"] = renamed["Reason"]["properties"].pop("name")
    assert "Reason.name: gone" in incompatibilities(released, renamed)
    retyped = copy.deepcopy(released)
    retyped["$top"]["properties"]["p"] = {"type": "string"}
    assert "$top.p: changed" in incompatibilities(released, retyped)
    required = copy.deepcopy(released)
    required["$top"]["properties"]["new"] = {"type": "string"}
    required["$top"]["required"] = sorted([*required["$top"]["required"], "new"])
    assert incompatibilities(released, required)
    optional = copy.deepcopy(released)
    optional["$top"]["properties"]["new"] = {"type": "string"}
    assert incompatibilities(released, optional) == []  # additive: same v


def test_a_bumped_version_is_a_new_schema_file() -> None:
    assert Intervention.model_fields["v"].default == 1
    assert "intervention.v1.schema.json" in CURRENT
