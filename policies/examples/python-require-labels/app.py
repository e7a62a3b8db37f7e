"""require-labels: a kubectl-gitops policy in Python (componentize-py).

Validate-only. Config: {"labels": ["team", ...]} — every object must carry these labels.
Proves the WIT contract (wit/policy.wit) is language-neutral: the reconciler's tests run this
component through the same host as the Rust built-ins.
"""

import json

import wit_world
from wit_world.imports import log, types
from componentize_py_types import Err


def _labels(config: str):
    value = json.loads(config) if config.strip() else None
    if not isinstance(value, dict) or not isinstance(value.get("labels"), list) or not value["labels"]:
        raise Err(types.ConfigError(message='config must be {"labels": ["<key>", ...]}', path="/labels"))
    for i, key in enumerate(value["labels"]):
        if not isinstance(key, str) or not key:
            raise Err(types.ConfigError(message="each label must be a non-empty string", path=f"/labels/{i}"))
    return value["labels"]


class WitWorld(wit_world.WitWorld):
    def metadata(self) -> types.Metadata:
        return types.Metadata(
            name="require-labels",
            version="0.1.0",
            description="Denies objects that lack any of the configured labels (Python example).",
            kind=types.PolicyKind.VALIDATE,
            config_schema=json.dumps({"type": "object", "required": ["labels"],
                                      "properties": {"labels": {"type": "array", "items": {"type": "string"}}}}),
        )

    def validate_config(self, config: str) -> None:
        _labels(config)

    def transform(self, context: types.Context, config: str, objects: list[str]) -> list[str]:
        return objects

    def validate(self, context: types.Context, config: str, objects: list[str]) -> list[types.Violation]:
        required = _labels(config)
        found = []
        for text in objects:
            obj = json.loads(text)
            meta = obj.get("metadata") or {}
            labels = meta.get("labels") or {}
            ref = types.ObjectRef(api_version=obj.get("apiVersion", ""), kind=obj.get("kind", ""),
                                  namespace=meta.get("namespace") or None, name=meta.get("name", ""))
            for key in required:
                if key not in labels:
                    found.append(types.Violation(object=ref, field="/metadata/labels",
                                                 message=f"label {key!r} is required",
                                                 severity=types.Severity.ERROR))
        log.log(log.Level.INFO, f"require-labels checked {len(objects)} objects")
        return found
