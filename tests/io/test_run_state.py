"""RunState: state.json in both layouts, reusable scenes (predict), chunks to rewrite (mosaic)."""

from __future__ import annotations

import json

from geoseg_batch.io.state import STATE_NAME, RunState, SceneState

GRID = {"crs": "EPSG:32633", "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0], "shape": [512, 512],
        "chunk": 256}


def test_predict_layout_round_trips_and_matches_the_file_format():
    state = RunState.for_scenes({"a": ("/data/a.tif", "k1"), "b": ("/data/b.tif", "k2")})
    assert state.to_json() == {"a": {"scene": "/data/a.tif", "key": "k1"}, "b": {"scene": "/data/b.tif", "key": "k2"}}
    assert RunState.loads(state.dumps()) == state
    assert state.dumps().endswith("}\n") and STATE_NAME == "state.json"


def test_reads_a_predict_state_written_by_earlier_runs():
    text = json.dumps({"a": {"scene": "a.tif", "key": "k1"}}, indent=2)
    state = RunState.loads(text)
    assert state.scenes["a"] == SceneState("k1", scene="a.tif") and state.grid is None


def test_reusable_scenes_are_those_with_the_same_key():
    state = RunState.for_scenes({"a": ("a.tif", "k1"), "b": ("b.tif", "k2")})
    assert state.reusable_scenes({"a": "k1", "b": "changed", "c": "k3"}) == {"a"}
    assert RunState().reusable_scenes({"a": "k1"}) == set()
    assert state.key_of("a") == "k1" and state.key_of("zzz") is None


def test_mosaic_layout_round_trips_and_matches_the_file_format():
    state = RunState.for_mosaic(GRID, {"a": "k1", "b": "k2"}, {"a": [(1, 0), (0, 0)], "b": [(0, 1)]})
    assert state.to_json() == {"grid": GRID, "scenes": {"a": {"key": "k1", "chunks": [[0, 0], [1, 0]]},
                                                        "b": {"key": "k2", "chunks": [[0, 1]]}}}
    again = RunState.loads(state.dumps())
    assert again == state and again.grid == GRID


def _mosaic_state() -> RunState:
    return RunState.for_mosaic(GRID, {"a": "k1", "b": "k2"}, {"a": [(0, 0), (0, 1)], "b": [(1, 1)]})


def test_nothing_to_rewrite_when_nothing_changed():
    assert _mosaic_state().chunks_to_rewrite(GRID, {"a": "k1", "b": "k2"}, {"a": [(0, 0), (0, 1)], "b": [(1, 1)]}) \
        == set()


def test_changed_new_and_gone_scenes_rewrite_their_chunks_before_and_now():
    state = _mosaic_state()
    # a changed and moved: its old and its new chunks; b gone: its old chunk; c new: its chunks
    chunks = state.chunks_to_rewrite(GRID, {"a": "k1-new", "c": "k3"}, {"a": [(1, 0)], "c": [(2, 2)]})
    assert chunks == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)}


def test_another_grid_or_no_state_rebuilds_everything():
    other = {**GRID, "shape": [1024, 512]}
    assert _mosaic_state().chunks_to_rewrite(other, {"a": "k1"}, {"a": [(0, 0)]}) is None
    assert RunState().chunks_to_rewrite(GRID, {"a": "k1"}, {"a": [(0, 0)]}) is None
    predict_state = RunState.for_scenes({"a": ("a.tif", "k1")})
    assert predict_state.chunks_to_rewrite(GRID, {"a": "k1"}, {"a": [(0, 0)]}) is None


def test_a_predict_scene_named_grid_is_not_taken_for_a_mosaic_state():
    state = RunState.loads(json.dumps({"grid": {"scene": "grid.tif", "key": "k"}, "scenes": {"scene": "s", "key": "j"}}))
    assert state.grid is None and state.key_of("grid") == "k" and state.key_of("scenes") == "j"
