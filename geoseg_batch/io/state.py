"""Incremental state: what each output of a run was made from (``state.json``).

A run that publishes versions records, per scene, the content key its outputs were made
from (the scene's checksum with the settings that shape its results); a mosaic also
records its grid and the chunks each scene covers. The next run compares its own keys
with the previous version's :class:`RunState` to know what it can reuse:
:meth:`RunState.reusable_scenes` (predict) and :meth:`RunState.chunks_to_rewrite` (mosaic).

Two layouts on disk, as written since the first incremental runs: predict's
``{stem: {"scene": path, "key": key}}`` (a STAC Item's also ``"item": {id, collection, updated, checksum}``) and
mosaic's
``{"grid": {...}, "scenes": {stem: {"key": key, "chunks": [[row, col], ...]}}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from geoseg_batch.io.publish import json_text

STATE_NAME = "state.json"
"""The state file in each published version (beside ``manifest.json``)."""

Chunk = tuple[int, int]


@dataclass(frozen=True)
class SceneState:
    """One scene's record: the key its outputs were made from, its path (predict), the chunks it covers (mosaic)."""

    key: str | None
    scene: str | None = None
    chunks: tuple[Chunk, ...] = ()
    item: Mapping[str, Any] | None = None  # a STAC Item's record (predict): id, collection, updated, checksum


@dataclass(frozen=True)
class RunState:
    """The content of ``state.json``: per-scene records and, for a mosaic, its grid record."""

    scenes: Mapping[str, SceneState] = field(default_factory=dict)
    grid: dict[str, Any] | None = None

    @classmethod
    def for_scenes(cls, scenes: Mapping[str, tuple[str, str]],
                   items: Mapping[str, Mapping[str, Any]] | None = None) -> RunState:
        """A predict run's state from ``{stem: (scene path, key)}``; ``items``: {stem: record} of the scenes that
        were STAC Items (what the next run's search is compared with)."""
        items = items or {}
        return cls({stem: SceneState(key, scene=str(path), item=items.get(stem))
                    for stem, (path, key) in scenes.items()})

    @classmethod
    def for_mosaic(cls, grid: dict[str, Any], keys: Mapping[str, str],
                   footprints: Mapping[str, Iterable[Chunk]]) -> RunState:
        """A mosaic run's state: its grid record, and each scene's key and chunks (``footprints``)."""
        return cls({stem: SceneState(key, chunks=tuple(sorted(tuple(c) for c in footprints[stem])))  # type: ignore[misc]
                    for stem, key in keys.items()}, grid=grid)

    def key_of(self, stem: str) -> str | None:
        """The key scene ``stem``'s outputs were made from; None when it has no record."""
        record = self.scenes.get(stem)
        return None if record is None else record.key

    def reusable_scenes(self, keys: Mapping[str, str]) -> set[str]:
        """Scenes of ``keys`` ({stem: key}) whose recorded outputs were made from the same key."""
        return {stem for stem, key in keys.items() if self.key_of(stem) == key}

    def chunks_to_rewrite(self, grid: dict[str, Any], keys: Mapping[str, str],
                          footprints: Mapping[str, Iterable[Chunk]]) -> set[Chunk] | None:
        """Chunks covered (before or now) by scenes that are new, changed or gone; None: the grid changed,
        build everything."""
        if self.grid != grid:
            return None
        chunks: set[Chunk] = set()
        for stem in set(self.scenes) | set(keys):
            if self.key_of(stem) != keys.get(stem):
                before = self.scenes.get(stem)
                chunks |= set(before.chunks) if before is not None else set()
                chunks |= {tuple(c) for c in footprints.get(stem, [])}  # type: ignore[misc]
        return chunks

    def to_json(self) -> dict[str, Any]:
        """The ``state.json`` payload, in predict's layout or (with a grid) mosaic's."""
        if self.grid is None:
            return {stem: {"scene": r.scene, "key": r.key, **({"item": dict(r.item)} if r.item else {})}
                    for stem, r in self.scenes.items()}
        return {"grid": self.grid, "scenes": {stem: {"key": r.key, "chunks": [list(c) for c in r.chunks]}
                                              for stem, r in self.scenes.items()}}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> RunState:
        """A state from a ``state.json`` payload of either layout."""
        if _is_mosaic_layout(payload):
            return cls({stem: SceneState(r.get("key"), chunks=tuple(tuple(c) for c in r.get("chunks", [])))
                        for stem, r in payload.get("scenes", {}).items()}, grid=payload["grid"])
        return cls({stem: SceneState(r.get("key"), scene=r.get("scene"), item=r.get("item"))
                    for stem, r in payload.items() if isinstance(r, Mapping)})

    def dumps(self) -> str:
        """The ``state.json`` text."""
        return json_text(self.to_json())

    @classmethod
    def loads(cls, text: str) -> RunState:
        """A state from ``state.json`` text."""
        return cls.from_json(json.loads(text))


def _is_mosaic_layout(payload: Mapping[str, Any]) -> bool:
    """Whether a payload is a mosaic's state (a grid record beside the scenes), not predict's per-scene map."""
    grid = payload.get("grid")
    return isinstance(grid, Mapping) and "crs" in grid and isinstance(payload.get("scenes"), Mapping)
