"""One option, one edit: every field of every job model is a CLI flag and an API keyword, with the model's default.

Each job is captured where it would run (``api.run_job``), so the whole path is checked:
flags -> handler -> API keyword -> dotted key -> validated job. Skipped fields: ``kind``
(the command itself); pipeline ``steps`` (PipelineJob has no command of its own: `submit`).
"""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from geoseg_batch import api
from geoseg_batch.cli import build_parser, main
from geoseg_batch.config import DemoJob, EvaluateJob, MosaicJob, PredictJob, TrainJob
from geoseg_batch.errors import ConfigError
from geoseg_batch.options import Option, job_options

# command -> (job model, API function, values of the fields without a default)
COMMANDS: dict[str, tuple[type[BaseModel], str, dict[str, Any]]] = {
    "train": (TrainJob, "train", {"out": "o", "data": "d"}),
    "evaluate": (EvaluateJob, "evaluate", {"model": "m.keras", "data": "d", "out": "e"}),
    "predict": (PredictJob, "predict_scene", {"scenes": ["s.tif"], "model": "m.keras", "out": "p"}),
    "mosaic": (MosaicJob, "mosaic", {"predictions": ["p"], "out": "mos"}),
    "demo": (DemoJob, "demo", {}),
}
# what other validators need beside a sample value
EXTRAS: dict[str, dict[str, Any]] = {"resampling": {"resample": True},
                                     **{name: {"stac": "https://stac.example/v1"} for name in (
                                         "collection", "bbox", "datetime", "query", "item_ids", "max_items",
                                         "assets", "stac_timeout_s")}}
# sample values for the options whose validators want a particular form
SAMPLES: dict[str, Any] = {"scheduler": "tcp://sample:8786", "assets": "red=B04,green=B03"}
# what the validators make of those samples, where it differs from the sample
PARSED: dict[str, Any] = {"assets": {"red": "B04", "green": "B03"}}
# flags of today's command line (DESIGN.md, README's CLI table): names are a contract
TODAYS_FLAGS = {
    "train": "--data --out --model-type --epochs --base-filters --depth --batch-size --learning-rate --loss "
             "--patience --input-size --seed --fill-nan --resolution-m --scheduler --workers --train-workers",
    "evaluate": "--model --data --out --split --batch-size --fill-nan --precision",
    "predict": "--scene-list --model --out --stitch --tile --overlap --batch-size --bands --nodata --resample "
               "--resampling --precision --float --polygons --zarr-format --no-cog --incremental --overwrite "
               "--scheduler --workers",
    "mosaic": "--out --crs --resolution --bounds --merge --chunk --zarr-format --no-cog --incremental --overwrite "
              "--scheduler --workers",
    "demo": "--out --scheduler --workers",
}


class Captured(BaseException):  # not an Exception: main() lets it through
    def __init__(self, job: BaseModel) -> None:
        super().__init__()
        self.job = job


@pytest.fixture(autouse=True)
def _capture_jobs(monkeypatch):
    def capture(job, client=None):
        raise Captured(job)

    monkeypatch.setattr(api, "run_job", capture)


def _spec(annotation: Any) -> type[BaseModel] | None:
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) in (
        Union, types.UnionType) else [annotation]
    return args[0] if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel) else None


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf field of the model, nested specs walked (independently of geoseg_batch.options)."""
    keys = set()
    for name, info in model.model_fields.items():
        if name == "kind" and not prefix:
            continue
        spec = _spec(info.annotation)
        keys |= _leaf_keys(spec, f"{prefix}{name}.") if spec else {f"{prefix}{name}"}
    return keys


def _model_default(model: type[BaseModel], key: str) -> Any:
    """The value a job of ``model`` has at ``key`` when nothing sets it."""
    *parents, leaf = key.split(".")
    current, instance = model, None
    for part in parents:
        info = current.model_fields[part]
        instance = getattr(instance, part) if instance is not None else info.get_default(call_default_factory=True)
        instance = instance if isinstance(instance, BaseModel) else None
        current = _spec(info.annotation)
    if instance is not None:
        return getattr(instance, leaf)
    return current.model_fields[leaf].get_default(call_default_factory=True)


def _json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _value_at(dump: dict[str, Any], key: str) -> Any:
    node: Any = dump
    for part in key.split("."):
        node = None if node is None else node[part]
    return node


def _flat(job: BaseModel, model: type[BaseModel]) -> dict[str, Any]:
    dump = job.model_dump(mode="json")
    return {key: _value_at(dump, key) for key in _leaf_keys(model)}


def _unwrap(annotation: Any) -> Any:
    """X of X | None."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _items(annotation: Any) -> list[Any]:
    """Two or more sample items of a list/tuple annotation."""
    args = get_args(_unwrap(annotation))
    item = args[0]
    if get_origin(item) is Literal:
        return list(get_args(item))
    if get_origin(item) in (Union, types.UnionType):
        return ["red", 3]
    samples = {int: [8, 16], float: [0.5, 0.25], str: ["a", "b", "c"], Path: ["x.tif", "y.tif"]}[item]
    if args[-1] is not Ellipsis and len(args) > 1:  # a fixed-length tuple
        return [item(n) for n in range(len(args))]
    return samples


def _sample(option: Option) -> Any:
    """A valid value for the option that differs from its default."""
    if option.name in SAMPLES:
        return SAMPLES[option.name]
    if option.choices:
        return next(c for c in option.choices if c != option.default)
    if option.kind is bool:
        return True if option.default is None else not option.default
    if option.kind in (list, tuple):
        return _items(option.annotation)
    if option.kind in (int, float):
        step = 1 if option.kind is int else 0.25
        return 16 if option.default is None else option.default + step
    return "sample"


def _argv(option: Option, value: Any) -> list[str]:
    if option.extra.get("positional"):
        return [str(v) for v in value]
    if option.kind is bool:  # the flag flips the default; a tri-state one (default None) has --no-X too
        return [option.flag.replace("--", "--no-", 1)] if option.default is None and value is False else [option.flag]
    if option.kind in (list, tuple):
        fixed = option.kind is tuple and Ellipsis not in get_args(_unwrap(option.annotation))
        return [option.flag, *map(str, value)] if fixed else [option.flag, ",".join(map(str, value))]
    return [option.flag, str(value)]


def _option(model: type[BaseModel], name: str) -> Option:
    return next(o for o in job_options(model) if o.name == name)


def _cli_job(command: str, values: dict[str, Any]) -> BaseModel:
    model = COMMANDS[command][0]
    argv = [token for name, value in values.items() for token in _argv(_option(model, name), value)]
    with pytest.raises(Captured) as caught:
        main([command, *argv])
    return caught.value.job


def _api_job(command: str, values: dict[str, Any]) -> BaseModel:
    with pytest.raises(Captured) as caught:
        getattr(api, COMMANDS[command][1])(**values)
    return caught.value.job


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_field_has_a_flag_and_a_keyword_with_the_models_default(command):
    model, _, required = COMMANDS[command]
    table = job_options(model)
    assert {o.key for o in table} == _leaf_keys(model)
    assert len({o.name for o in table}) == len(table), "keywords are unique"
    parser = _subparser(command)
    spelled = {s for a in parser._actions for s in a.option_strings} | {a.dest for a in parser._actions}
    assert {o.flag for o in table} <= spelled
    assert set(TODAYS_FLAGS[command].split()) <= spelled
    from_cli, from_api = _cli_job(command, required), _api_job(command, required)
    assert from_cli == from_api
    flat = _flat(from_cli, model)
    for option in table:
        if option.name not in required:  # scenes: required by the validator, not the field
            default = _json(_model_default(model, option.key))
            if _in_absent_section(model, option.key):  # e.g. predict's stac: a section the job leaves out
                assert flat[option.key] is None and default == _json(option.default), option.key
            else:
                assert flat[option.key] == default == _json(option.default), option.key


def _in_absent_section(model: type[BaseModel], key: str) -> bool:
    """Whether ``key`` lies in an optional section (``stac: StacSpec | None``) that is None by default."""
    section = key.split(".")[0]
    return "." in key and model.model_fields[section].get_default(call_default_factory=True) is None


def _cases() -> list[tuple[str, str]]:
    return [(command, o.name) for command, (model, *_) in COMMANDS.items() for o in job_options(model)]


@pytest.mark.parametrize("command, name", _cases())
def test_each_flag_and_keyword_sets_exactly_its_key(command, name):
    model, _, required = COMMANDS[command]
    option = _option(model, name)
    extras = EXTRAS.get(name, {})
    values = {**required, name: _sample(option), **extras}
    from_cli, from_api = _cli_job(command, values), _api_job(command, values)
    assert from_cli == from_api
    base, changed = _flat(_cli_job(command, required), model), _flat(from_cli, model)
    moved = {key for key in base if base[key] != changed[key]}
    appeared = {key for key in moved if _in_absent_section(model, key)  # a section given: its other keys defaulted
                and changed[key] == _json(_model_default(model, key))}
    assert moved - appeared == {option.key} | {_option(model, n).key for n in extras}
    assert changed[option.key] == PARSED.get(name, _json(_sample(option)))


@pytest.mark.parametrize("argv, key, expected", [
    (["predict", "s.tif", "--model", "m", "--out", "o", "--bands", "red, 3,nir"], "bands", ["red", 3, "nir"]),
    (["predict", "s.tif", "--model", "m", "--out", "o", "--no-cog"], "cog", False),
    (["predict", "s.tif", "--model", "m", "--out", "o", "--float"], "float_output", True),
    (["predict", "s.tif", "--model", "m", "--out", "o", "--zarr-format", "3"], "zarr_format", 3),
    (["predict", "s.tif", "--model", "m", "--out", "o", "--no-gpu"], "gpu", False),
    (["predict", "s.tif", "--model", "m", "--out", "o"], "gpu", None),
    (["mosaic", "p", "--out", "o", "--bounds", "0", "-1", "2.5", "3"], "bounds", [0.0, -1.0, 2.5, 3.0]),
    (["train", "--data", "d", "--classes", "bg,slide,water"], "classes", ["bg", "slide", "water"]),
    (["train", "--data", "d", "--sweep-learning-rate", "1e-3,3e-4"], "sweep_learning_rate", [1e-3, 3e-4]),
    (["train", "--data", "d", "--no-augment"], "augment", False),
    (["demo", "--train-seed", "7", "--seed", "3"], "train_seed", 7),
])
def test_derived_flags_parse_to_typed_values(argv, key, expected):
    args = build_parser().parse_args(argv)
    assert getattr(args, key) == expected
    assert type(getattr(args, key)) is type(expected)


def test_choices_come_from_the_literals(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["mosaic", "p", "--out", "o", "--merge", "median"])
    assert exc.value.code == 2
    assert "invalid choice: 'median' (choose from 'max', 'first', 'mean')" in capsys.readouterr().err


def test_unknown_keyword_names_the_closest_one():
    with pytest.raises(TypeError, match="unknown keyword 'tiel'; did you mean tile?") as exc:
        api.predict_scene("s.tif", "m.keras", "p", tiel=64)
    assert isinstance(exc.value, ConfigError) and exc.value.exit_code == 2
    with pytest.raises(ConfigError, match="did you mean epochs?"):
        api.train(data="d", out="o", epoch=3)


def test_dotted_keys_and_flat_names_are_the_same_override():
    flat, dotted = _api_job("train", {"data": "d", "out": "o", "epochs": 3}), _api_job(
        "train", {"data.path": "d", "out": "o", "train.epochs": 3})
    assert flat == dotted and flat.train.epochs == 3
