"""Atomic publishing and the run manifest (provenance).

Results appear atomically: a file is written under a temporary name in its final
directory and renamed into place; a directory is built as a hidden sibling and
renamed at the end, so a failed run leaves nothing where results are published; an output
replaced by a new one is exchanged with it in one step (:mod:`geoseg_batch.io.swap`), so there is
no moment without a complete output.

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
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from geoseg_batch.errors import OutputExistsError
from geoseg_batch.io.swap import recover_leftovers, replace_tree

MANIFEST_NAME = "manifest.json"
VERSIONS_KEPT = 3
"""Versions of a versioned output kept (the current one included): incremental outputs, and every output in
object storage."""


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
        tmp.write_text(json_text(payload))
    return Path(path)


def json_text(payload: Any) -> str:
    """``payload`` as the indented JSON text (with a final newline) that :func:`write_json` writes."""
    return json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def require_free(out: Path, overwrite: bool) -> None:
    """Raise unless ``out`` may be written: absent, empty, or ``overwrite`` given."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{out}: output directory already exists and is not empty; "
            "choose another --out or pass --overwrite"
        )


@contextlib.contextmanager
def staged_directory(out: Path | str, overwrite: bool = False, resume_key: str | None = None) -> Iterator[Path]:
    """Build a directory as a hidden sibling of ``out`` and rename it to ``out`` on success.

    ``out`` must not exist (or be empty) unless ``overwrite`` is set. Without ``resume_key``
    a failed run's staging directory is removed and ``out`` is left as it was. With it, the
    staging directory is named after the key and, when it holds completion records (files
    under ``.done/``), kept on failure, so a re-run of the same job (same key) finds what
    the failed one finished; entries starting with ``.`` in it
    (such as completion records) are dropped when it is published.
    """
    out = Path(out)
    recover_leftovers(out)
    require_free(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{resume_key or secrets.token_hex(6)}"
    stage.mkdir(exist_ok=resume_key is not None)
    published = False
    try:
        yield stage
        _drop_hidden(stage)
        replace_tree(stage, out)  # the old output (if any) and the new one exchanged in one step
        published = True
    finally:
        if not published and stage.exists() and (resume_key is None or not _has_records(stage)):
            shutil.rmtree(stage, ignore_errors=True)


def _drop_hidden(stage: Path) -> None:
    """Remove the staging directory's hidden entries (completion records), which are not results."""
    for hidden in stage.glob(".*"):
        shutil.rmtree(hidden) if hidden.is_dir() else hidden.unlink()


def _has_records(stage: Path) -> bool:
    """Whether a failed run left completion records worth resuming from (files under ``.done``)."""
    return any(p.is_file() for p in (stage / ".done").rglob("*"))


@contextlib.contextmanager
def versioned_directory(out: Path | str, resume_key: str, keep: int = 3, overwrite: bool = False
                        ) -> Iterator[tuple[Path, Path | None]]:
    """Publish a new version of ``out`` atomically, for results updated in place run after run.

    ``out`` is a symbolic link to the current version, a directory under the hidden sibling
    ``.<name>.versions/``. Yields (staging directory, previous version or None); on success
    the staging directory becomes a version and the link is swapped with one rename, so a
    reader sees the old version or the new one, never a mix. Unchanged files can be
    hard-linked from the previous version (see :func:`link_tree`): writers replace files
    by renaming, never in place, so old versions stay intact. The ``keep`` newest versions
    are kept. Like :func:`staged_directory` with a key, a failed run's staging directory is
    kept for a re-run to resume.
    """
    out = Path(out)
    recover_leftovers(out)
    versions_dir = out.parent / f".{out.name}.versions"
    if out.exists() and not out.is_symlink() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{out}: holds results that are not versioned (an earlier run without incremental); "
            "choose another out or pass --overwrite to replace it"
        )
    previous = out.resolve() if out.is_symlink() and out.resolve().is_dir() else None
    versions_dir.mkdir(parents=True, exist_ok=True)
    stage = versions_dir / f".staging-{resume_key}"
    stage.mkdir(exist_ok=True)
    yield stage, previous
    _drop_hidden(stage)
    now = time.time_ns()
    version = versions_dir / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now // 10**9))}.{now % 10**9:09d}-{resume_key}"
    os.replace(stage, version)
    link = out.parent / f".{out.name}.link-{secrets.token_hex(4)}"
    os.symlink(os.path.relpath(version, out.parent), link)
    if out.is_symlink() or not out.exists():
        os.replace(link, out)  # rename(2) over the old link: the atomic swap
    else:
        replace_tree(link, out)  # unversioned results (--overwrite): exchanged with the link in one step
    older = sorted(p for p in versions_dir.iterdir() if not p.name.startswith(".") and p != version)
    for old in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)


def link_tree(source: Path | str, destination: Path | str) -> None:
    """Copy a file or directory tree by hard links (no data copied; falls back to copying across devices)."""
    source, destination = Path(source), Path(destination)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, destination, copy_function=link)
    else:
        link(str(source), str(destination))


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


def checksums(paths: Iterable[Path | str], cloud: Any | None = None) -> dict[str, str]:
    """``{path: "sha256:<hex>"}`` for each file; ``{url: "etag:<ETag>:<size>"}`` for each object-storage URL
    (its identity from the store: hashing it would download it). ``cloud``: the
    :class:`~geoseg_batch.io.remote.CloudSettings` to ask the store with (default: the environment's)."""
    return {str(p): _checksum(p, cloud) for p in paths}


def _checksum(path: Path | str, cloud: Any | None) -> str:
    """The checksum :func:`checksums` records for one file or URL."""
    from geoseg_batch.io.urls import is_url

    if not is_url(path):
        return f"sha256:{sha256_file(path)}"
    from geoseg_batch.io.remote import CloudSettings, object_checksum

    return object_checksum(str(path), cloud or CloudSettings.of())


def config_digest(config: Mapping[str, Any], file_checksums: Mapping[str, str]) -> str:
    """A short key for "the same job on the same inputs": resolved config plus input checksums."""
    payload = json.dumps({"config": config, "inputs": dict(sorted(file_checksums.items()))}, sort_keys=True,
                         default=_json_default)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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


def manifest_payload(
    *,
    command: str,
    outputs: list[dict[str, Any]],
    summary: Mapping[str, Any],
    config: Mapping[str, Any],
    inputs: Mapping[str, str],
) -> dict[str, Any]:
    """The content of ``manifest.json``: command, outputs, summary, config, versions, checksums."""
    return {
        "command": command,
        "outputs": outputs,
        "summary": dict(summary),
        "config": dict(config),
        "versions": versions(),
        "checksums": dict(inputs),
    }


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
    payload = manifest_payload(command=command, outputs=outputs, summary=summary, config=config, inputs=inputs)
    return write_json(Path(out_dir) / MANIFEST_NAME, payload)
