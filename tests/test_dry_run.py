"""predict --dry-run: the plan of a run, equal to what a real run computes, with nothing started or written."""

from __future__ import annotations

import psutil
import pytest

from geoseg_batch import predict_scene
from geoseg_batch.cli import main
from geoseg_batch.geo.grid import TileGrid
from geoseg_batch.infer.segment import model_task_count, task_blocks
from geoseg_batch.runs.dry_run import multiply_adds_per_pixel

from tests.helpers import local_client, make_bundle, write_scene


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny bundle (depth 3) and a 300 x 260 scene: 5 x 5 tiles of 64."""
    root = tmp_path_factory.mktemp("dry")
    return make_bundle(root / "m.keras"), write_scene(root / "scene.tif", (300, 260))


def test_dry_run_starts_nothing_and_writes_nothing(tmp_path, capsys, inputs):
    from distributed.client import _get_global_client

    bundle, scene = inputs
    out = tmp_path / "out"
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    assert main(["predict", str(scene), "--model", str(bundle), "--out", str(out), "--tile", "64",
                 "--dry-run"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"dry run: nothing computed, nothing written to {out}"
    assert "1 scene, 0.078 Mpx (largest 300 x 260); exact stitch, tile 64, halo " in printed[1]
    assert printed[1].endswith(": 25 tiles"), printed
    assert printed[2].startswith("tasks: 6 model tasks (4x2 tiles each), 0 blend, 2 product"), printed
    assert "a worker may use" in printed[3] and "estimated time ~" in printed[4], printed
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no stage, no log
    assert _get_global_client() is None  # no cluster was connected to (this test runs before the module's client)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children  # no worker processes


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster for the real runs (threads: fast to start)."""
    with local_client(2, processes=False) as c:
        yield c


def _key(key) -> str:
    return key if isinstance(key, str) else str(key[0])


@pytest.mark.parametrize("stitch, batch_size", [("exact", 1), ("blend", 12)])
def test_plan_counts_what_a_real_run_computes(tmp_path, inputs, client, stitch, batch_size):
    from distributed import get_task_stream

    bundle, scene = inputs
    options = {"tile": 64, "stitch": stitch, "batch_size": batch_size, "cog": False}
    plan = predict_scene(scene, bundle, tmp_path / "dry", dry_run=True, **options).summary["plan"]
    with get_task_stream(client=client) as stream:
        real = predict_scene(scene, bundle, tmp_path / "real", client=client, **options).summary
    keys = [_key(t["key"]) for t in stream.data]
    assert plan["tiles"] == real["tiles_total"] == real["tiles_computed"] == 25
    assert plan["model_tasks"] == sum(k.startswith("predict-") for k in keys)
    assert plan["model_tasks"] == (6 if batch_size == 1 else 4)  # blocks of 4 x 2, widened to 4 x 3 for 12
    assert plan["blend_tasks"] == sum(k.startswith("blend-") for k in keys) == (25 if stitch == "blend" else 0)
    assert plan["model_pixels_per_output_pixel"] == pytest.approx(1 + real["overlap_fraction"], abs=1e-4)
    assert plan["halo"] == real["halo"] and plan["megapixels"] == real["megapixels"]
    assert plan["graph_tasks"] == plan["model_tasks"] + plan["blend_tasks"] + plan["product_tasks"]
    assert not (tmp_path / "dry").exists()


def test_a_plan_too_big_is_refused_as_a_run_is(tmp_path, capsys, inputs):
    bundle, scene = inputs
    assert main(["predict", str(scene), "--model", str(bundle), "--out", str(tmp_path / "out"), "--workers", "1",
                 "--tile", "1000000", "--dry-run"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("geoseg-batch: error: tile (--tile) 1000000: a model task"), line
    assert "a worker may use" in line and "use --tile " in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape, tile, halo, multiple", [((300, 260), 64, 24, 8), ((1000, 17), 128, 0, 16),
                                                        ((5, 7), 8, 64, 8), ((4096, 4096), 512, 128, 16)])
def test_arithmetic_counts_equal_the_listed_tiles(shape, tile, halo, multiple):
    grid = TileGrid(shape, tile, halo, multiple)
    tiles = grid.tiles()
    assert grid.computed_pixels() == sum(t.window.shape[0] * t.window.shape[1] for t in tiles)
    for batch_size in (1, 8, 13):
        assert model_task_count(grid, batch_size) == len(task_blocks(tiles, grid.tile, batch_size, lanes=2))


@pytest.mark.parametrize("model_type", ["unet", "attention_unet"])
def test_multiply_adds_per_pixel_equal_the_built_models(model_type):
    """Counted from the model's own layers: every convolution's kernel x input x output channels, at its output's
    pixels per input pixel (a 2 x 2 stride-2 transposed convolution: one kernel tap per output pixel)."""
    from keras import layers

    from geoseg_batch.model.unet import build_model

    model = build_model(model_type, bands=5, classes=2, depth=3, base_filters=4)
    counted = 0.0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            taps = 1 if isinstance(layer, layers.Conv2DTranspose) else layer.kernel_size[0] * layer.kernel_size[1]
            counted += taps * layer.input.shape[-1] * layer.filters * _fraction(model, layer, 64)
    assert multiply_adds_per_pixel(model_type, 5, 2, 3, 4) == pytest.approx(counted)


def _fraction(model, layer, side: int) -> float:
    """Output pixels of ``layer`` per input pixel of ``model`` on a ``side`` x ``side`` input."""
    import keras

    probe = keras.Model(model.inputs, layer.output)
    rows, cols = probe.compute_output_shape((1, side, side, model.inputs[0].shape[-1]))[1:3]
    return rows * cols / side**2


def test_a_dry_run_on_a_client_plans_for_its_workers(tmp_path, inputs, client):
    bundle, scene = inputs
    plan = predict_scene(scene, bundle, tmp_path / "dry", tile=64, dry_run=True, client=client).summary["plan"]
    limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    assert plan["estimate"]["cores"] == 2 and plan["worker_limit_bytes"] == min(limits)
    assert plan["task_may_use_bytes"] == min(limits) // 2
    assert not (tmp_path / "dry").exists()


def test_a_dry_run_job_file_prints_its_plan(tmp_path, capsys, inputs):
    bundle, scene = inputs
    job = tmp_path / "job.yaml"
    job.write_text(f"kind: predict\nscenes: [{scene}]\nmodel: {bundle}\nout: {tmp_path / 'out'}\ntile: 64\n"
                   "dry_run: true\n")
    assert main(["submit", str(job)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("dry run: nothing computed") and ": 25 tiles" in printed and "manifest" not in printed
    assert not (tmp_path / "out").exists()
