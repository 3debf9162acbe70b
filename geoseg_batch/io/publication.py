"""One run's publication: where a job writes, what it may reuse, and how its results appear.

Every job writes its results through a :class:`Publication` (a context manager)::

    with Publication(out, key, incremental=job.incremental, overwrite=job.overwrite) as publication:
        reused = publication.previous_state.reusable_scenes(keys)   # incremental: the last version's record
        publication.reuse("scene.zarr")                          # hard link from the previous version
        ... write into publication.stage ...
        publication.record_state(RunState.for_scenes(...))        # state.json
        manifest = publication.write_manifest(command="predict", ...)
    # published here, in one step, only if the block succeeded

Three ways of publishing, as the jobs have always done:

- staged (the default): the results are built in a hidden staging directory named after
  ``key`` (tile completion records under its ``.done/``, so a killed run resumes) and
  renamed onto ``out`` at the end (:func:`~geoseg_batch.io.publish.staged_directory`);
- ``incremental``: a new version of ``out`` (a link to the current version, the 3 newest
  kept), the previous version's state and files available for reuse, and the link swapped
  at the end (:func:`~geoseg_batch.io.publish.versioned_directory`);
- ``direct``: results written in ``out`` itself, as they are made (training, whose
  checkpoints must survive a crash; the demo and pipelines, whose steps publish their own).

A failure inside the block publishes nothing: ``out`` keeps what it held before.

``out`` may be a prefix in object storage (an :class:`~geoseg_batch.io.urls.ObjectPath`, with
:class:`~geoseg_batch.io.object_storage.ObjectStorage`): there the stage is the new version's
own prefix, published by the pointer object, so :meth:`Publication.published` names the
version's objects (what the manifest lists), and readers follow the pointer.

One run at a time writes to ``out``: entering a publication takes the lease on ``out``
(:mod:`geoseg_batch.io.lease`, through the storage) and leaving it releases the lease, however
the block ends. A runner that must refuse a second run before its expensive preparation
(hashing, starting a cluster) takes the lease itself first, with :func:`output_lease`, and
hands it in (``lease=``). With ``wait``, a run that waited for another one can ask
:meth:`Publication.finished` whether ``out`` now holds its own results (same run key, which
the manifest's summary records as ``run_key``) and do nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from geoseg_batch.io.lease import WAIT_TIMEOUT_S, Lease
from geoseg_batch.io.oserrors import translated_os_errors
from geoseg_batch.io.publish import MANIFEST_NAME, VERSIONS_KEPT, json_text, manifest_payload
from geoseg_batch.io.state import STATE_NAME, RunState
from geoseg_batch.io.storage import Storage, storage_for
from geoseg_batch.io.urls import Output, output_location

RECORDS_DIR = ".done"
"""The staging directory's tile completion records (hidden: never published)."""



def output_lease(out: Output | str, wait: bool = False, wait_timeout_s: float = WAIT_TIMEOUT_S,
                 storage: Storage | None = None) -> Lease:
    """The lease on ``out`` (a context manager releasing it), taken through ``storage`` (default: ``out``'s);
    an OSError of the location (read-only, under a file) comes out as one line."""
    out = output_location(out)
    with translated_os_errors(out):
        return (storage or storage_for(out)).acquire_lease(out, wait, wait_timeout_s)


class Publication:
    """The staging of one run's results and their publication on exit (see the module docstring)."""

    def __init__(self, out: Output | str, key: str | None = None, *, incremental: bool = False,
                 overwrite: bool = False, direct: bool = False, storage: Storage | None = None,
                 lease: Lease | None = None, wait: bool = False, wait_timeout_s: float = WAIT_TIMEOUT_S) -> None:
        if incremental and (direct or key is None):
            raise ValueError(f"an incremental publication needs a key and a stage (received key={key!r}, "
                             f"direct={direct}); pass the run's key and direct=False")
        self.out: Any = output_location(out)  # a Path, or an ObjectPath
        self.key = key
        self.incremental = incremental
        self.overwrite = overwrite
        self.direct = direct
        self.storage: Storage = storage or storage_for(self.out)
        self.stage: Any = self.out
        self.previous: Any | None = None
        self.lease = lease
        self.wait, self.wait_timeout_s = wait, wait_timeout_s
        self._open = contextlib.ExitStack()
        self._state: RunState | None = None

    def __enter__(self) -> Publication:
        try:
            with translated_os_errors(self.out):
                self._open_stage()
        except BaseException:
            self._open.close()  # the lease, if this publication took it
            raise
        return self

    def _open_stage(self) -> None:
        """Take the lease (unless handed one) and open the staging place of the publication's kind."""
        if self.lease is None:
            self.lease = self._open.enter_context(output_lease(self.out, self.wait, self.wait_timeout_s,
                                                               self.storage))
        if self.incremental:
            assert self.key is not None
            self.stage, self.previous = self._open.enter_context(
                self.storage.versioned(self.out, self.key, VERSIONS_KEPT, self.overwrite))
        elif not self.direct:
            self.stage = self._open.enter_context(self.storage.staged(self.out, self.overwrite, self.key))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> bool:
        if kind is None and self.lease is not None:
            try:
                self.lease.confirm()  # a run that lost its lease publishes nothing
            except BaseException as lost:
                if not self._open.__exit__(type(lost), lost, lost.__traceback__):
                    raise
                return False
        with translated_os_errors(self.out):  # the block's OSErrors too: they come from writing the results
            if self._open.__exit__(kind, error, trace):
                return True
            if isinstance(error, OSError):
                raise error
            return False

    def finished(self) -> dict[str, Any] | None:
        """The manifest ``out`` holds when it records this publication's run key (the same job on the same
        inputs, published); None otherwise, and always for an incremental publication (whose run, when nothing
        changed, reuses everything and publishes a version of its own, with its own record)."""
        path = self.finished_manifest()
        if path is None:
            return None
        try:
            payload = json.loads(self.storage.read_text(path))
        except (OSError, ValueError):
            return None
        return payload if isinstance(payload, dict) and payload.get("summary", {}).get("run_key") == self.key \
            else None

    def finished_manifest(self) -> Any | None:
        """Where the current results' manifest is (in object storage: in the version the pointer names); None
        when nothing is published, and for an incremental publication."""
        current = None if self.key is None or self.incremental else self.storage.current(self.out)
        path = None if current is None else current / MANIFEST_NAME
        return path if path is not None and self.storage.exists(path) else None

    @property
    def previous_state(self) -> RunState:
        """The previous version's :class:`RunState`; empty when there is none (or it recorded none)."""
        if self._state is None:
            path = None if self.previous is None else self.previous / STATE_NAME
            found = path is not None and self.storage.exists(path)
            self._state = RunState.loads(self.storage.read_text(path)) if found else RunState()  # type: ignore[arg-type]
        return self._state

    def has_previous(self, name: str) -> bool:
        """Whether the previous version holds ``name``."""
        return self.previous is not None and self.storage.exists(self.previous / name)

    def reuse(self, name: str, missing_ok: bool = True) -> bool:
        """Link ``name`` from the previous version into the stage (unless the stage has it already);
        whether the stage now holds it. ``missing_ok=False``: FileNotFoundError when the previous lacks it."""
        if self.storage.exists(self.stage / name):
            return True
        if not self.has_previous(name):
            if missing_ok:
                return False
            raise FileNotFoundError(f"{self.previous}: holds no {name} to reuse")
        assert self.previous is not None
        self.storage.link(self.previous / name, self.stage / name)
        return True

    def records_dir(self, name: str) -> Any:
        """Where the tasks writing ``name`` record their finished pieces (kept in a failed stage, never published)."""
        return self.stage / RECORDS_DIR / name

    @property
    def results(self) -> Any:
        """Where the results are read once published: ``out``, or (object storage) the new version's prefix."""
        return self.stage if self.storage.in_place else self.out

    def published(self, name: str) -> Any:
        """Where ``name`` will be once published (in object storage: in the new version's prefix)."""
        return self.results / name

    def local_copy(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path to write the stage's ``name`` at (the stage's own path, where it is local); what is
        written there is in the stage when the block ends."""
        return self.storage.local_copy(self.stage / name)

    def record_state(self, state: RunState) -> Path:
        """Write ``state.json`` into the stage; returns its staged path."""
        return self.storage.write_text(self.stage / STATE_NAME, state.dumps())

    def write_manifest(self, *, command: str, outputs: list[dict[str, Any]], summary: Mapping[str, Any],
                       config: Mapping[str, Any], inputs: Mapping[str, str]) -> Any:
        """Write ``manifest.json`` into the stage; returns the path it is published at."""
        recorded = {**summary, "run_key": self.key} if self.key is not None else summary
        payload = manifest_payload(command=command, outputs=outputs, summary=recorded, config=config, inputs=inputs)
        self.storage.write_text(self.stage / MANIFEST_NAME, json_text(payload))
        return self.published(MANIFEST_NAME)
