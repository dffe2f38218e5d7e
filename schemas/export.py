"""JSON Schema export: the machine-readable form of the contract, for any language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas.erasure import ErasureAudit, ErasureRequest
from schemas.events import EVENT_ADAPTER
from schemas.outputs import DeadLetter, Decision, Intervention, ModelSnapshot, TrainingExample

COMMITTED_DIR = Path(__file__).resolve().parent / "json"

_OUTPUTS: dict[str, type[BaseModel]] = {
    "dead_letter": DeadLetter,
    "training_example": TrainingExample,
    "model_snapshot": ModelSnapshot,
    "decision": Decision,
    "intervention": Intervention,
    "erasure_request": ErasureRequest,
    "erasure_audit": ErasureAudit,
}


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document."""
    docs: dict[str, dict[str, Any]] = {}
    event = EVENT_ADAPTER.json_schema(mode="validation")
    event["title"] = "ClickstreamEvent"
    docs["event.v1.schema.json"] = event
    for name, model in _OUTPUTS.items():
        version = model.model_fields["v"].default  # a bumped v is a new file
        doc = TypeAdapter(model).json_schema(mode="serialization")
        docs[f"{name}.v{version}.schema.json"] = _open_objects(doc)
    for name, doc in docs.items():
        doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        doc["$id"] = name
    return docs


def _open_objects(node: Any) -> Any:
    """``additionalProperties: false`` (pydantic's extra="forbid", which keeps our own
    producers exact) taken out of the published schemas: a consumer validating with them
    must accept the fields a later, additive release adds (docs/events.md)."""
    if isinstance(node, dict):
        return {
            k: _open_objects(v)
            for k, v in node.items()
            if not (k == "additionalProperties" and v is False)
        }
    if isinstance(node, list):
        return [_open_objects(v) for v in node]
    return node


# Frozen signatures of every released schema version (schemas/compat/<file>): what a
# consumer of that version relies on. tests/unit/test_schema_compat.py holds the current
# schemas to them (docs/events.md, "Compatibility").
COMPAT_DIR = Path(__file__).resolve().parent / "compat"
_WORDING = frozenset({"description", "title", "examples"})


def _strip(node: Any) -> Any:
    """A schema without its wording: what validation depends on."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in _WORDING}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def signature(doc: dict[str, Any]) -> dict[str, Any]:
    """Per object of a schema (the top level as ``"$top"``, then each of ``$defs``): its
    required fields and each property's schema, wording left out."""
    objects = {"$top": doc, **doc.get("$defs", {})}
    return {
        name: {
            "required": sorted(obj.get("required", [])),
            "properties": {k: _strip(v) for k, v in obj.get("properties", {}).items()},
        }
        for name, obj in objects.items()
        if "properties" in obj
    }


def incompatibilities(released: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What ``current`` changed that a consumer of the ``released`` signature would trip
    over: a field gone, renamed or retyped, a new required field (older messages lack
    it), a required field made optional. New optional fields are additive: allowed."""
    problems = []
    for obj, was in released.items():
        now = current.get(obj)
        if now is None:
            problems.append(f"{obj}: gone")
            continue
        if now["required"] != was["required"]:
            problems.append(f"{obj}: required {was['required']} -> {now['required']}")
        for field, schema in was["properties"].items():
            if field not in now["properties"]:
                problems.append(f"{obj}.{field}: gone")
            elif now["properties"][field] != schema:
                problems.append(f"{obj}.{field}: changed")
    return problems


def freeze(name: str) -> Path:
    """Record the signature of schema file ``name`` as released (once per version)."""
    COMPAT_DIR.mkdir(exist_ok=True)
    path = COMPAT_DIR / name
    path.write_text(render(signature(schemas()[name])), encoding="utf-8")
    return path


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in schemas().items():
        path = out_dir / name
        path.write_text(render(doc), encoding="utf-8")
        written.append(path)
    return written
