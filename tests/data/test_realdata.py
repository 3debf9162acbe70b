"""Real Sentinel-2 landslide chips (../shared/data) through the whole training path.

The chips are GeoTIFFs (4 bands, float64, 256x256; labels 0 unlabelled, 1 not landslide,
2 landslide). They are written here in the Landslide4Sense layout (landslide = 1, else 0)
the way a user would import them, then packed, summarized, trained on and evaluated.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tests.helpers import SHARED_DATA

CHIPS = SHARED_DATA / "s2_landslide_chips"


@pytest.fixture(scope="module")
def real_l4s(tmp_path_factory):
    import rasterio

    root = tmp_path_factory.mktemp("s2") / "l4s"
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    for n, image_path in enumerate(sorted((CHIPS / "images").glob("*.tif"))[:24], start=1):
        with rasterio.open(image_path) as src:
            image = np.moveaxis(src.read(), 0, -1)
        with rasterio.open(CHIPS / "labels" / image_path.name) as src:
            mask = (src.read(1) == 2).astype(np.uint8)
        with h5py.File(root / "img" / f"image_{n}.h5", "w") as f:
            f["img"] = image  # float64, as exported
        with h5py.File(root / "mask" / f"mask_{n}.h5", "w") as f:
            f["mask"] = mask
    return root


@pytest.mark.realdata
def test_real_chips_pack_train_evaluate(real_l4s, tmp_path):
    from geoseg_batch import evaluate, pack_shards, train

    packed = pack_shards(real_l4s, tmp_path / "shards", chips_per_shard=8, workers=1)
    stats = json.loads(packed.stats.read_text())
    stacked = np.stack([h5py.File(p)["img"][()] for p in sorted((real_l4s / "img").glob("*.h5"))])
    np.testing.assert_allclose(stats["mean"], stacked.reshape(-1, 4).mean(0), rtol=1e-6)
    assert 0 <= min(stats["min"]) and max(stats["max"]) <= 5728  # DATA.md: digital numbers 0..5728

    result = train(data=packed.out, out=tmp_path / "run", epochs=1, depth=3, base_filters=4, batch_size=4,
                   input_size=128)
    bundle = result.outputs[0]["bundle"]
    scores = evaluate(model=bundle, data=real_l4s, out=tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["chips"] == 24 and metrics["pixels"] == 24 * 128 * 128
    assert 0.0 <= scores.summary["f1"] <= 1.0 and sum(map(sum, metrics["confusion_matrix"])) == metrics["pixels"]
