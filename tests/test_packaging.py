"""Packaging: pyproject and environment.yml list the same dependencies; README's two commands exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    names = set()
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"sys_platform": "linux", "extra": ""}):
            names.add(f"{re.sub(r'[-_.]+', '-', requirement.name).lower()}{requirement.specifier}")
    return names


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["test"])
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert _names([p for p in pip if not p.startswith("-e")]) == wanted


def test_never_both_tensorflow_and_tensorflow_cpu_on_one_platform():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for platform in ("linux", "darwin", "win32"):
        names = {Requirement(r).name for r in project["dependencies"]
                 if Requirement(r).marker is None or Requirement(r).marker.evaluate({"sys_platform": platform})}
        assert len(names & {"tensorflow", "tensorflow-cpu"}) == 1, platform


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "## Architecture" in readme


def test_public_api_names_survive_importing_every_submodule():
    """A subpackage named like an API function (geoseg_batch.train) would replace it on import."""
    import importlib
    import inspect
    import pkgutil

    import geoseg_batch

    for module in pkgutil.walk_packages(geoseg_batch.__path__, "geoseg_batch."):
        importlib.import_module(module.name)
    for name in geoseg_batch.__all__:
        value = getattr(geoseg_batch, name)
        assert not inspect.ismodule(value), f"geoseg_batch.{name} is shadowed by a module"
