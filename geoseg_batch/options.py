"""One table of options per job model: the CLI's flags and the Python API's keywords, derived from the schema.

Each field of a job model (nested specs flattened: ``epochs`` is ``train.epochs``) is one
:class:`Option`: its flat keyword name, dotted key, flag, type, choices (from ``Literal``),
help (from the Field description) and default (from the model). A nested field whose name
is taken gets its section's prefix (``sweep_base_filters``, demo's ``train_seed``).
Exceptions to the derived spelling live beside the field, in ``json_schema_extra``:
``flag``, ``name``, ``metavar``, ``positional`` and ``exclusive`` (a mutually exclusive group).
Values not given stay None and are dropped, so a YAML job's and the schema's defaults apply.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from geoseg_batch.errors import ConfigError

SKIPPED = ("kind",)  # the job's kind is the command itself
SCALARS = (bool, int, float, str, Path)


class OptionError(ConfigError, TypeError):
    """An unknown option keyword: a ConfigError (exit 2) and the TypeError Python gives unknown keywords."""


@dataclass(frozen=True)
class Option:
    """One field of a job model as a command-line flag and an API keyword."""

    name: str  # the API keyword and the argparse dest
    key: str  # the dotted key in the job mapping
    annotation: Any
    help: str | None
    default: Any
    required: bool
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> type:
        """The value's type: bool, int, float, str, Path, list or tuple."""
        outer = _optional(self.annotation)
        return get_origin(outer) if get_origin(outer) in (list, tuple) else _scalar(outer)[0]

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The Literal's values, or None."""
        return _scalar(_optional(self.annotation))[1]

    @property
    def flag(self) -> str:
        """``--epochs`` (``--no-cog`` for a flag that turns a default-true boolean off); the name if positional."""
        if self.extra.get("positional"):
            return self.name
        if "flag" in self.extra:
            return str(self.extra["flag"])
        negated = self.kind is bool and self.default is True
        return ("--no-" if negated else "--") + self.name.replace("_", "-")


def _optional(annotation: Any) -> Any:
    """``X`` for ``X | None``; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """(type, Literal choices or None) of a scalar annotation; str for a union such as ``str | int``."""
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), choices
    return (annotation if annotation in SCALARS else str), None


def _element(annotation: Any) -> tuple[Any, int | None]:
    """(element annotation, fixed length or None) of a list or tuple annotation."""
    args = get_args(_optional(annotation))
    if get_origin(_optional(annotation)) is tuple and args and args[-1] is not Ellipsis:
        return args[0], len(args)
    return args[0], None


def _parse_item(annotation: Any) -> Callable[[str], Any]:
    """Parser of one list item: ``str | int`` reads digits as numbers (bands by name or 1-based number)."""
    if get_origin(annotation) in (Union, types.UnionType) and int in get_args(annotation):
        return lambda text: int(text.strip()) if text.strip().isdigit() else text.strip()
    kind = _scalar(annotation)[0]
    return (lambda text: text.strip()) if kind in (str, Path) else kind


def _comma_list(annotation: Any) -> Callable[[str], list[Any]]:
    """argparse type of a comma-separated list of ``annotation`` items."""
    item = _parse_item(annotation)

    def comma_list(text: str) -> list[Any]:
        return [item(part) for part in text.split(",") if part.strip()]

    return comma_list


def _leaves(model: type[BaseModel], prefix: str = "", parent: BaseModel | None = None,
            ) -> Iterator[tuple[str, str, FieldInfo, Any]]:
    """(dotted key, field name, field, default) of every leaf field, nested specs flattened in field order."""
    for name, info in model.model_fields.items():
        if name in SKIPPED and not prefix:
            continue
        default = getattr(parent, name) if parent is not None else info.get_default(call_default_factory=True)
        spec = _optional(info.annotation)
        if isinstance(spec, type) and issubclass(spec, BaseModel):
            yield from _leaves(spec, f"{prefix}{name}.", default if isinstance(default, BaseModel) else None)
        else:
            yield f"{prefix}{name}", name, info, default


@functools.cache
def job_options(model: type[BaseModel]) -> tuple[Option, ...]:
    """The options of a job model: top-level fields under their own names, nested ones prefixed when taken."""
    leaves = sorted(_leaves(model), key=lambda leaf: "." in leaf[0])  # top-level fields claim names first
    taken: set[str] = set()
    table = []
    for key, name, info, default in leaves:
        extra = dict(info.json_schema_extra or {}) if isinstance(info.json_schema_extra, dict) else {}
        name = str(extra.get("name", name))
        if name in taken:
            name = key.replace(".", "_")
        taken.add(name)
        table.append(Option(name=name, key=key, annotation=info.annotation, help=info.description,
                            default=None if info.is_required() else default, required=info.is_required(),
                            extra=extra))
    order = [key for key, *_ in _leaves(model)]
    return tuple(sorted(table, key=lambda option: order.index(option.key)))


def _help(option: Option) -> str | None:
    """The Field description, with the default when it does not say it; '%' escaped for argparse."""
    text, default = option.help, option.default
    shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
    if default is not None and not isinstance(default, bool) and shown != "" and "default" not in (text or ""):
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return None if text is None else text.replace("%", "%%")


def _argument(option: Option, require: bool) -> tuple[list[str], dict[str, Any]]:
    """(names, keywords) of ``add_argument`` for one option."""
    kwargs: dict[str, Any] = {"help": _help(option)}
    if "metavar" in option.extra:
        kwargs["metavar"] = tuple(option.extra["metavar"]) if isinstance(option.extra["metavar"], list) \
            else option.extra["metavar"]
    if option.extra.get("positional"):
        element = _scalar(_element(option.annotation)[0])[0]
        nargs = "+" if option.required else "*"
        return [option.name], {**kwargs, "nargs": nargs, "type": str if element is Path else element}
    kwargs.update(dest=option.name, default=None)
    if option.required and require:
        kwargs["required"] = True
    if option.kind is bool:
        if option.default is None:
            return [option.flag], {**kwargs, "action": argparse.BooleanOptionalAction}
        return [option.flag], {**kwargs, "action": "store_false" if option.default else "store_true"}
    if option.kind in (list, tuple):
        element, length = _element(option.annotation)
        if length:
            return [option.flag], {**kwargs, "nargs": length, "type": _parse_item(element)}
        kwargs.setdefault("metavar", f"{option.name.upper()},...")
        return [option.flag], {**kwargs, "type": _comma_list(element)}
    kind = str if option.kind is Path else option.kind
    return [option.flag], {**kwargs, "type": kind, "choices": option.choices}


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...], require: bool = True) -> None:
    """Add one argument per option: top-level ones to ``parser``, nested ones to a group per section.

    ``require``: fields without a default are required flags (False where a job file may give them).
    """
    groups: dict[str, Any] = {"": parser}
    for option in options:
        section = option.key.rpartition(".")[0].split(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(section)
        target = groups[section]
        if "exclusive" in option.extra:
            name = f"{section}:{option.extra['exclusive']}"
            if name not in groups:
                groups[name] = target.add_mutually_exclusive_group()
            target = groups[name]
        names, kwargs = _argument(option, require)
        target.add_argument(*names, **kwargs)


def given(options: tuple[Option, ...], args: argparse.Namespace) -> dict[str, Any]:
    """The options set on the command line, by API keyword (values left at None are dropped)."""
    values = {option.name: getattr(args, option.name, None) for option in options}
    return {name: value for name, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    """A value as a job mapping holds it: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def overrides(options: tuple[Option, ...], values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Dotted-key overrides for ``values`` given by API keyword or dotted key; OptionError names the closest one."""
    by_name = {option.name: option.key for option in options}
    keys = set(by_name.values())
    dotted: dict[str, Any] = {}
    for name, value in values.items():
        key = by_name.get(name) or (name if name in keys else None)
        if key is None:
            close = difflib.get_close_matches(name, [*by_name, *keys], n=1)
            hint = f"did you mean {close[0]}?" if close else f"valid keywords: {', '.join(by_name)}"
            raise OptionError(f"{source}: unknown keyword {name!r}; {hint}")
        dotted[key] = _plain(value)
    return dotted


def section_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The nested specs whose defaults the model sets itself (DemoJob's smaller model), as a job mapping.

    A base payload for overrides: ``--epochs 4`` on the demo keeps the demo's batch size and patience.
    """
    return {name: info.default.model_dump(mode="json", exclude_unset=True)
            for name, info in model.model_fields.items()
            if isinstance(info.default, BaseModel) and info.default.model_fields_set}
