"""Every bad-data case: one line naming the file and the problem, exit code 2, nothing at OUT."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from geoseg_batch.cli import main


def _write(root: Path, n: int, image: np.ndarray | None, mask: np.ndarray | None, image_key: str = "img") -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(parents=True, exist_ok=True)
    if image is not None:
        with h5py.File(root / "img" / f"image_{n}.h5", "w") as f:
            f[image_key] = image
    if mask is not None:
        with h5py.File(root / "mask" / f"mask_{n}.h5", "w") as f:
            f["mask"] = mask


def _good(root: Path, count: int = 3, bands: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for n in range(1, count + 1):
        _write(root, n, rng.random((16, 16, bands), dtype=np.float32), (rng.random((16, 16)) > 0.8).astype(np.uint8))
    return root


def _pack(src: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["shards", "pack", str(src), str(out), "--workers", "1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def _assert_failed_cleanly(code: int, line: str, out: Path, *needles: str) -> None:
    assert code == 2, line
    assert line.startswith("geoseg-batch: error: ")
    for needle in needles:
        assert needle in line, line
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "staging left behind"


def test_missing_dataset_key(tmp_path, capsys):
    src = _good(tmp_path / "src")
    _write(src, 2, np.zeros((16, 16, 4), np.float32), None, image_key="image")
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "image_2.h5", "dataset 'img' not found")


def test_image_mask_shape_mismatch(tmp_path, capsys):
    src = _good(tmp_path / "src")
    _write(src, 2, None, np.zeros((12, 16), np.uint8))
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "mask_2.h5", "does not match image shape")


def test_band_count_differs(tmp_path, capsys):
    src = _good(tmp_path / "src")
    _write(src, 3, np.zeros((16, 16, 5), np.float32), None)
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "image_3.h5", "5 bands", "has 4")


def test_unpaired_image(tmp_path, capsys):
    src = _good(tmp_path / "src")
    (src / "mask" / "mask_2.h5").unlink()
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "image_2.h5", "unpaired image", "mask_2.h5")


def test_unpaired_mask(tmp_path, capsys):
    src = _good(tmp_path / "src")
    _write(src, 9, None, np.zeros((16, 16), np.uint8))
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "mask_9.h5", "unpaired mask")


def test_empty_directory(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    code, line = _pack(tmp_path / "src", tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", str(tmp_path / "src"), "empty directory")


def test_truncated_hdf5(tmp_path, capsys):
    src = _good(tmp_path / "src")
    path = src / "img" / "image_2.h5"
    path.write_bytes(path.read_bytes()[:1000])
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "image_2.h5", "truncated or not HDF5")


def test_not_hdf5(tmp_path, capsys):
    src = _good(tmp_path / "src")
    (src / "mask" / "mask_3.h5").write_text("not an hdf5 file\n")
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "mask_3.h5", "truncated or not HDF5")


def test_nan_counted_then_fill_nan_accepts(tmp_path, capsys):
    src = _good(tmp_path / "src")
    image = np.ones((16, 16, 4), np.float32)
    image[0, :3, 0] = np.nan
    image[5, 5, 2] = np.inf
    _write(src, 2, image, None)
    code, line = _pack(src, tmp_path / "out", capsys)
    _assert_failed_cleanly(code, line, tmp_path / "out", "image_2.h5", "4 NaN/inf values", "--fill-nan")

    code, line = _pack(src, tmp_path / "out", capsys, "--fill-nan", "0")
    assert code == 0, line
    with h5py.File(tmp_path / "out" / "shard_00000.h5") as f:
        images = f["images"][()]
        position = list(f["chip_ids"].asstr()[()]).index("image_2")
    assert np.isfinite(images).all()
    assert images[position, 0, 0, 0] == 0.0 and images[position, 5, 5, 2] == 0.0


def test_train_reports_bad_data_without_writing(tmp_path, capsys):
    src = _good(tmp_path / "src")
    (src / "mask" / "mask_1.h5").unlink()
    code = main(["train", "--data", str(src), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert code == 2
    assert "unpaired image" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_existing_output_is_refused(tmp_path, capsys):
    src = _good(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, line = _pack(src, out, capsys)
    assert code == 2 and "--overwrite" in line
    assert (out / "keep.txt").read_text() == "mine"
    shutil.rmtree(out)
