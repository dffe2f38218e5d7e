"""JSON Schema export: the machine-readable form of the contract, for any language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.erasure import ErasureAudit, ErasureRequest
from schemas.events import EVENT_ADAPTER
from schemas.outputs import DeadLetter, Decision, Intervention, ModelSnapshot, TrainingExample

COMMITTED_DIR = Path(__file__).resolve().parent / "json"

_OUTPUTS: dict[str, type] = {
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
        docs[f"{name}.v1.schema.json"] = TypeAdapter(model).json_schema(mode="serialization")
    for name, doc in docs.items():
        doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        doc["$id"] = name
    return docs


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
