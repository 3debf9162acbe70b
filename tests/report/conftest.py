"""Shared helpers and fixtures for the report tests: PNG checks, figure texts, inputs, test rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: tuple[int, int] = (200, 200)) -> tuple[int, int]:
    """The file is a readable, not blank PNG of plausible size, alone in its directory (no temp files)."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
    assert min_size[0] <= width <= 5000
    assert min_size[1] <= height <= 5000
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temp files left behind"
    assert_not_blank(path)
    return width, height


def png_pixels(path: Path) -> np.ndarray:
    """The PNG's pixels as an (H, W, 3) uint8 array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_not_blank(path: Path, min_colours: int = 8) -> None:
    """The PNG shows something: its pixels vary and hold at least ``min_colours`` distinct colours."""
    pixels = png_pixels(path)
    assert pixels.std() > 0, f"{path.name} is one flat colour"
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, f"{path.name} holds only {len(colours)} colours"


def legend_texts(legend) -> list[str]:
    """The entries of a matplotlib legend (an empty list for None)."""
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


def axes_texts(ax) -> list[str]:
    """Free texts and annotations drawn on ``ax``."""
    return [text.get_text() for text in ax.texts]


def image_axes(fig: Figure) -> list:
    """The axes of ``fig`` that show an image (colour bars left out)."""
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def write_history(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty directory for PNGs, apart from inputs written to tmp_path."""
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


def pr_points(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Precision, recall and thresholds (N - 1 of them, scikit-learn style) and the best-F1 threshold."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.2
    scores = np.clip(labels * 0.4 + rng.random(n) * 0.6, 0, 1)
    thresholds = np.unique(scores)
    precision = np.array([labels[scores >= t].mean() for t in thresholds] + [1.0])
    recall = np.array([(labels & (scores >= t)).sum() / labels.sum() for t in thresholds] + [0.0])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return precision, recall, thresholds, float(thresholds[np.argmax(f1[:-1])])


def sample_batch(n: int = 3, size: int = 32, bands: int = 14, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, size, size, bands)).astype(np.float32)
    truths = np.zeros((n, size, size), dtype=np.uint8)
    truths[:, 8:20, 10:22] = 1
    predictions = np.zeros((n, size, size), dtype=np.int64)
    predictions[:, 10:22, 8:20] = 1
    probabilities = rng.random((n, size, size)).astype(np.float32)
    return images, truths, predictions, probabilities


def write_raster(path: Path, data: np.ndarray, nodata: float | None, names: tuple[str, ...] | None = None,
                 cog: bool = True) -> Path:
    """A georeferenced GeoTIFF of (bands, rows, cols) ``data``; as a COG with overviews when ``cog``."""
    import rasterio
    import rasterio.shutil
    from affine import Affine

    bands, rows, cols = data.shape
    plain = path.with_name(f"plain_{path.name}") if cog else path
    with rasterio.open(plain, "w", driver="GTiff", height=rows, width=cols, count=bands, dtype=data.dtype.name,
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5200000), nodata=nodata,
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(data)
        if names:
            dst.descriptions = names
    if cog:
        rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=256, OVERVIEWS="AUTO")
        plain.unlink()
        with rasterio.open(path) as src:
            assert src.overviews(1), "the test COG should have overviews"
    return path


@pytest.fixture(scope="package")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A float32 Sentinel-2-named scene with -9999 nodata, and uint8 probability / mask COGs (255 nodata)."""
    root = tmp_path_factory.mktemp("rasters")
    rng = np.random.default_rng(0)
    rows, cols = 1100, 700
    scene = rng.normal(1200, 300, (4, rows, cols)).astype(np.float32)
    scene[:, :300, :200] = -9999.0
    probability = np.clip(rng.random((1, rows, cols)) * 250, 0, 250).astype(np.uint8)
    probability[:, :300, :200] = 255
    mask = (probability > 125).astype(np.uint8)
    mask[:, :300, :200] = 255
    return {
        "scene": write_raster(root / "scene.tif", scene, -9999.0, ("B2", "B3", "B4", "B8")),
        "probabilities": write_raster(root / "scene_probabilities.tif", probability, 255),
        "mask": write_raster(root / "scene_mask.tif", mask, 255),
        "plain": write_raster(root / "plain.tif", scene[:2, :40, :50], -9999.0, cog=False),
    }


@pytest.fixture
def read_shapes(monkeypatch) -> list[tuple[int, ...]]:
    """Every ``out_shape`` rasterio is asked to read (None for a full-resolution read)."""
    import rasterio.io

    shapes: list[tuple[int, ...]] = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        shapes.append(tuple(kwargs["out_shape"]) if kwargs.get("out_shape") is not None else None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    return shapes
