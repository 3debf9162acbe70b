"""The bundle: metadata round trip, identical predictions in a fresh process, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from geoseg_batch.errors import BundleError, MissingInputError
from geoseg_batch.model.bundle import load_bundle, read_metadata


def test_metadata_carries_what_inference_needs(tiny_bundle, shards_dir):
    meta = read_metadata(tiny_bundle)
    stats = json.loads((shards_dir / "stats.json").read_text())
    assert meta.band_names[-2:] == ("slope", "DEM") and meta.bands == 14
    assert meta.normalization["mean"] == stats["mean"] and meta.normalization["std"] == stats["std"]
    assert meta.classes == ("background", "landslide") and meta.threshold == 0.5
    assert (meta.size_multiple, meta.receptive_radius) == (4, 26)
    assert meta.input_size == (32, 32)
    assert meta.provenance["data_checksum"].startswith("sha256:")
    assert meta.provenance["config"]["model"]["depth"] == 2
    assert meta.provenance["package_version"] == "0.1.0"


def test_reloads_in_fresh_process_and_predicts_identically(tiny_bundle, tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 48, 64, 14)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    here = np.asarray(load_bundle(tiny_bundle).model.predict_on_batch(x))
    script = (
        "import sys, numpy as np; from geoseg_batch.model.bundle import load_bundle; "
        "b = load_bundle(sys.argv[1]); "
        "np.save(sys.argv[3], np.asarray(b.model.predict_on_batch(np.load(sys.argv[2]))))"
    )
    subprocess.run([sys.executable, "-c", script, str(tiny_bundle), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), here)


def test_not_a_bundle(tmp_path, tiny_bundle):
    with pytest.raises(MissingInputError, match="no such model bundle"):
        read_metadata(tmp_path / "nope.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(junk)
    plain = tmp_path / "plain.keras"
    with zipfile.ZipFile(tiny_bundle) as src, zipfile.ZipFile(plain, "w") as dst:
        for name in src.namelist():
            if name != "geoseg_bundle.json":
                dst.writestr(name, src.read(name))
    with pytest.raises(BundleError, match="without geoseg metadata"):
        load_bundle(plain)


def test_safe_mode_is_on(tiny_bundle, tmp_path, monkeypatch):
    import keras

    seen = {}
    real = keras.saving.load_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", spy)
    load_bundle(tiny_bundle)
    assert seen["safe_mode"] is True
