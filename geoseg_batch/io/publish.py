"""Atomic publishing and the run manifest (provenance).

Results appear atomically: a file is written under a temporary name in its final
directory and renamed into place; a directory is built as a hidden sibling and
renamed at the end, so a failed run leaves nothing where results are published.

Every command that produces results writes ``manifest.json`` in its output directory:
``outputs`` (one entry per result with its paths), ``summary`` (figures such as
``wall_s``), the resolved ``config``, ``versions`` and input ``checksums``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from geoseg_batch.errors import OutputExistsError

MANIFEST_NAME = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh unused name rather than mkstemp: mkstemp's 0600 mode would stick to the result.
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix or '.tmp'}"
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: Path | str, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically; returns the path."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@contextlib.contextmanager
def staged_directory(out: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory as a hidden sibling of ``out`` and rename it to ``out`` on success.

    ``out`` must not exist (or be empty) unless ``overwrite`` is set; on failure the staging
    directory is removed and ``out`` is left as it was.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{out}: output directory already exists and is not empty; "
            "choose another --out or pass --overwrite"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{secrets.token_hex(6)}"
    stage.mkdir()
    try:
        yield stage
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def ensure_replaceable(out: Path | str, command: str) -> None:
    """Refuse to replace a non-empty ``out`` unless it holds an earlier ``command``'s results."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return
    manifest = out / MANIFEST_NAME
    try:
        previous = json.loads(manifest.read_text()).get("command")
    except (OSError, ValueError):
        previous = None
    if previous != command:
        raise OutputExistsError(
            f"{out}: exists and does not hold earlier `{command}` results; choose an empty or new --out"
        )


def sha256_file(path: Path | str, block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def checksums(paths: Iterable[Path | str]) -> dict[str, str]:
    """``{path: "sha256:<hex>"}`` for each file."""
    return {str(p): f"sha256:{sha256_file(p)}" for p in paths}


def combined_digest(file_checksums: Mapping[str, str]) -> str:
    """One digest standing for a set of files (order-independent, names excluded)."""
    digest = hashlib.sha256()
    for value in sorted(file_checksums.values()):
        digest.update(value.encode())
    return f"sha256:{digest.hexdigest()}"


def versions() -> dict[str, str]:
    """Versions of the package and of the libraries that shape results."""
    from importlib import metadata

    found = {}
    for name in ("geoseg-batch", "tensorflow", "tensorflow-cpu", "keras", "numpy", "h5py",
                 "dask", "distributed", "rasterio", "rioxarray", "xarray", "zarr"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def write_manifest(
    out_dir: Path | str,
    *,
    command: str,
    outputs: list[dict[str, Any]],
    summary: Mapping[str, Any],
    config: Mapping[str, Any],
    inputs: Mapping[str, str],
) -> Path:
    """Write ``out_dir/manifest.json`` (atomically) and return its path."""
    payload = {
        "command": command,
        "outputs": outputs,
        "summary": dict(summary),
        "config": dict(config),
        "versions": versions(),
        "checksums": dict(inputs),
    }
    return write_json(Path(out_dir) / MANIFEST_NAME, payload)
