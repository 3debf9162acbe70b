"""Reading a job: YAML files, dotted-key overrides, and validation with one line per problem.

A job is a mapping with a ``kind`` validated by the matching model of :mod:`geoseg_batch.config`
(``extra="forbid"``): unknown keys are rejected with their YAML path and the closest valid key,
wrong types and out-of-range values with what was received and expected. The CLI and the
Python API build the same mapping from their options (:func:`merge_overrides`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from geoseg_batch.config import JOB_KINDS, AnyJob
from geoseg_batch.errors import ConfigError, MissingInputError


def _spec_classes(annotation: Any) -> list[type[BaseModel]]:
    """Spec classes inside an annotation (through Optional, list[...], Annotated unions)."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [c for arg in getattr(annotation, "__args__", ()) for c in _spec_classes(arg)]


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the spec reached by following ``loc`` (keys, list indexes, kind tags) from ``model``."""
    current: Any = model
    candidates: list[type[BaseModel]] = []
    for key in loc:
        if isinstance(key, int):
            continue
        tagged = [c for c in candidates if c.model_fields.get("kind") and c.model_fields["kind"].default == key]
        if tagged:  # pydantic puts the discriminator value in the path of a tagged union member
            current, candidates = tagged[0], []
            continue
        field = current.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            break
        candidates = _spec_classes(field.annotation)
        if not candidates:
            break
        current = candidates[0]
    return list(current.model_fields) if hasattr(current, "model_fields") else []


def _location(loc: tuple[Any, ...]) -> str:
    """``steps[0].model`` for pydantic's ('steps', 0, 'predict', 'model'): indexes bracketed, kind tags dropped."""
    text = ""
    for position, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif not (position and isinstance(loc[position - 1], int) and part in JOB_KINDS):
            text += f".{part}" if text else str(part)
    return text


def _describe(error: dict[str, Any], model: type[BaseModel], source: str) -> str:
    """One line for a pydantic error: where, what was received, what is expected, how to fix."""
    loc = tuple(error["loc"])
    where = _location(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(valid)}"
        return f"{source}: {where}: unknown key; {hint}"
    if error["type"] == "missing":
        return f"{source}: {where}: required key is missing; add it"
    if error["type"] == "value_error":  # our validators' messages already say what and how
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{source}: {message}" if not loc else f"{source}: {where}: {message}"
    received = error.get("input")
    text = repr(received) if not isinstance(received, dict) else "a mapping"
    return f"{source}: {where}: {error['msg']} (received {text})"


def parse_job(payload: dict[str, Any], source: str = "job") -> AnyJob:
    """Validate a job mapping; ConfigError with one line for the first problem."""
    if not isinstance(payload, dict):
        raise ConfigError(f"{source}: a job is a mapping with a 'kind' key, got {type(payload).__name__}")
    kind = payload.get("kind")
    if kind not in JOB_KINDS:
        close = difflib.get_close_matches(str(kind), list(JOB_KINDS), n=1)
        hint = f" did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{source}: kind: {kind!r} is not a job kind; expected one of {list(JOB_KINDS)}.{hint}")
    model = JOB_KINDS[kind]
    try:
        return TypeAdapter(model).validate_python(payload)
    except ValidationError as exc:
        # An unknown key first: "modle: did you mean model?" says more than "model is missing".
        first = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        raise ConfigError(_describe(first, model, source)) from None


def load_job(path: Path | str, overrides: dict[str, Any] | None = None) -> AnyJob:
    """Read, merge ``overrides`` into, and validate a YAML job file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such job file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a job file; give the job's .yaml file")
    try:
        payload = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML job file (not UTF-8 text); give the job's .yaml file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_job(merge_overrides(payload, overrides or {}), source=str(path))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The first line of a YAML error, with where to fix it (line, column) when the parser knows."""
    text = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return text
    return f"{text} (line {mark.line + 1}, column {mark.column + 1}); fix the syntax there"


def merge_overrides(payload: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with dotted-key ``overrides`` (``{"train.epochs": 3}``) set; None values are skipped."""
    merged = _deep_copy(payload)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
