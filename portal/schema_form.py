"""A form generated from a job type's JSON schema (its `args_schema`, the catalogue's own).

Each top-level property becomes one field, with the HTML constraints the schema implies
(required, min/max, maxlength, an anchored pattern, a choice list), so the browser checks what
it can before sending. What it cannot express (nested objects and arrays, `oneOf`) is a JSON
text field. The server then parses the values into arguments and the job type's own validator
decides, exactly as for the API; its errors are mapped back to the field they concern.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

from jobs.catalogue import JobType


@dataclass
class SchemaField:
    name: str
    kind: str  # number, integer, string, choice, boolean, json
    label: str
    required: bool
    description: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    choices: list[str] = field(default_factory=list)
    value: str = ""
    checked: bool = False
    error: str = ""

    @property
    def input_id(self) -> str:
        return f"arg-{self.name}"

    @property
    def input_type(self) -> str:
        return {"number": "number", "integer": "number"}.get(self.kind, "text")


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def _field(name: str, schema: Mapping[str, Any], required: bool) -> SchemaField:
    kind = schema.get("type")
    spec = SchemaField(
        name=name,
        kind="json",
        label=str(schema.get("title", name.replace("_", " ").capitalize())),
        required=required,
        description=str(schema.get("description", "")),
    )
    if "enum" in schema and kind == "string":
        spec.kind = "choice"
        spec.choices = [str(choice) for choice in schema["enum"]]
    elif kind in ("number", "integer"):
        spec.kind = kind
        spec.attrs["step"] = "1" if kind == "integer" else "any"
        for key, attr in (("minimum", "min"), ("maximum", "max")):
            if key in schema:
                spec.attrs[attr] = _format_number(schema[key])
    elif kind == "string":
        spec.kind = "string"
        if "maxLength" in schema:
            spec.attrs["maxlength"] = schema["maxLength"]
        pattern = schema.get("pattern")
        # HTML anchors a pattern; JSON Schema searches. Only an anchored one means the same.
        if isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$"):
            spec.attrs["pattern"] = pattern[1:-1]
    elif kind == "boolean":
        spec.kind = "boolean"
    if spec.required and spec.kind not in ("boolean",):
        spec.attrs["required"] = True
    return spec


def schema_fields(job_type: JobType) -> list[SchemaField]:
    schema = job_type.args_schema
    required = set(schema.get("required", ()))
    return [
        _field(name, sub, name in required) for name, sub in schema.get("properties", {}).items()
    ]


def fields_fill(fields: list[SchemaField], args: Mapping[str, Any]) -> None:
    """Show existing arguments (run again with edited arguments)."""
    for spec in fields:
        if spec.name not in args:
            continue
        value = args[spec.name]
        if spec.kind == "boolean":
            spec.checked = bool(value)
        elif spec.kind == "json":
            spec.value = json.dumps(value, ensure_ascii=False)
        elif spec.kind in ("number", "integer") and isinstance(value, int | float):
            spec.value = _format_number(value)
        else:
            spec.value = str(value)


def _parse(spec: SchemaField, raw: str) -> Any:
    """One posted value as the schema's type; ValueError with a message for the field."""
    if spec.kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("Enter a whole number.") from None
    if spec.kind == "number":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("Enter a number.") from None
        if not math.isfinite(number):
            raise ValueError("Enter a finite number.")
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if spec.kind == "json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Enter valid JSON ({exc.msg}).") from None
    return raw


def fields_parse(fields: list[SchemaField], data: QueryDict) -> dict[str, Any] | None:
    """The arguments from a posted form, or None when a field could not be read (each such field
    carries its error). Empty optional fields are left out, as a caller of the API would."""
    args: dict[str, Any] = {}
    ok = True
    for spec in fields:
        if spec.kind == "boolean":
            spec.checked = data.get(spec.name) == "on"
            args[spec.name] = spec.checked
            continue
        raw = data.get(spec.name, "")
        spec.value = raw
        if raw == "" and spec.kind not in ("string", "choice"):
            if spec.required:
                spec.error = "This field is required."
                ok = False
            continue
        if raw == "" and not spec.required:
            continue
        try:
            args[spec.name] = _parse(spec, raw.strip() if spec.kind != "string" else raw)
        except ValueError as exc:
            spec.error = str(exc)
            ok = False
    return args if ok else None


_REQUIRED = re.compile(r"^'([^']+)' is a required property$")


def fields_attach_errors(fields: list[SchemaField], details: list[dict[str, str]]) -> list[str]:
    """Put the validator's errors next to their fields; those for no field are returned."""
    by_name = {spec.name: spec for spec in fields}
    left: list[str] = []
    for detail in details:
        top = detail["path"].split("/")[0]
        # jsonschema reports a missing property on the object that lacks it, the root.
        if top == "(root)" and (missing := _REQUIRED.match(detail["message"])):
            top, detail = missing.group(1), {**detail, "message": "This field is required."}
        spec = by_name.get(top)
        if spec is not None and not spec.error:
            spec.error = detail["message"]
        elif spec is None:
            left.append(detail["message"])
    return left
