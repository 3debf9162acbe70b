"""Tests for geoseg_batch.report: quicklook PNGs and the RGB composite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.figure import Figure
from PIL import Image

from geoseg_batch import report
from geoseg_batch.data.bands import L4S_BANDS, default_band_names

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: tuple[int, int] = (200, 200)) -> tuple[int, int]:
    """The file is a readable PNG of plausible size, alone in its directory (no temp files)."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
    assert min_size[0] <= width <= 5000
    assert min_size[1] <= height <= 5000
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temp files left behind"
    return width, height


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


# --------------------------------------------------------------------------- training curves

FULL_HEADER = [
    "epoch", "loss", "val_loss", "precision", "recall", "f1", "iou",
    "val_precision", "val_recall", "val_f1", "val_iou", "learning_rate", "seconds",
]


def test_training_curves_with_val_columns(tmp_path: Path, out_dir: Path) -> None:
    rows = []
    for epoch in range(12):
        loss = 0.7 * 0.85**epoch
        metric = 1 - 0.9 * 0.8**epoch
        rows.append([epoch, loss, loss + 0.05, metric, metric, metric, metric / 2,
                     metric - 0.1, metric - 0.1, metric - 0.1, metric / 2 - 0.1, 0.001, 12.5])
    history = write_history(tmp_path / "history.csv", FULL_HEADER, rows)
    out = report.plot_training_curves(history, out_dir / "curves.png")
    assert out == out_dir / "curves.png"
    width, height = assert_png(out)
    assert width > height  # two panels side by side


def test_training_curves_without_val_columns(tmp_path: Path, out_dir: Path) -> None:
    rows = [[epoch, 1.0 / (epoch + 1), epoch / 10] for epoch in range(5)]
    history = write_history(tmp_path / "history.csv", ["epoch", "loss", "f1"], rows)
    assert_png(report.plot_training_curves(history, out_dir / "curves.png"))


def test_training_curves_loss_only_single_epoch_and_gaps(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss", "val_f1", "seconds"], [[0, 0.5, "", 3.0]])
    assert_png(report.plot_training_curves(history, out_dir / "curves.png"))


def test_training_curves_resumed_run_with_duplicate_epochs(tmp_path: Path, out_dir: Path) -> None:
    rows = [[0, 0.9, 0.95], [1, 0.8, 0.85], [1, 0.7, 0.75], [2, 0.6, 0.7]]
    history = write_history(tmp_path / "h.csv", ["epoch", "loss", "val_loss"], rows)
    assert_png(report.plot_training_curves(history, out_dir / "curves.png"))


def test_training_curves_creates_parent_and_overwrites(tmp_path: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss"], [[0, 1.0], [1, 0.5]])
    out = tmp_path / "new" / "nested" / "curves.png"
    report.plot_training_curves(history, out)
    out.write_bytes(b"stale")
    assert_png(report.plot_training_curves(history, out))


def test_training_curves_missing_epoch_column(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["loss", "val_loss"], [[1.0, 1.1]])
    with pytest.raises(ValueError, match="epoch"):
        report.plot_training_curves(history, out_dir / "curves.png")
    assert list(out_dir.iterdir()) == []


def test_training_curves_bad_value_names_line_and_column(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss"], [[0, 1.0], [1, "oops"]])
    with pytest.raises(ValueError, match=r"line 3 column 'loss'.*'oops'"):
        report.plot_training_curves(history, out_dir / "curves.png")


def test_training_curves_no_rows(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss"], [])
    with pytest.raises(ValueError, match="no epoch rows"):
        report.plot_training_curves(history, out_dir / "curves.png")


def test_training_curves_missing_file(tmp_path: Path, out_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        report.plot_training_curves(tmp_path / "nope.csv", out_dir / "curves.png")


# --------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_two_classes(out_dir: Path) -> None:
    matrix = np.array([[9_500_000, 12_000], [3_400, 41_000]])
    out = report.plot_confusion_matrix(matrix, ["background", "landslide"], out_dir / "cm.png")
    assert out == out_dir / "cm.png"
    assert_png(out)


def test_confusion_matrix_many_classes_with_empty_row(out_dir: Path) -> None:
    matrix = np.arange(36, dtype=float).reshape(6, 6)
    matrix[2] = 0  # a class with no true pixels
    assert_png(report.plot_confusion_matrix(matrix, [f"class {i}" for i in range(6)], out_dir / "cm.png"))


@pytest.mark.parametrize(
    ("matrix", "names", "pattern"),
    [
        (np.zeros((2, 3)), ["a", "b"], r"received shape \(2, 3\), expected \(K, K\)"),
        (np.zeros((1, 1)), ["a"], r"received shape \(1, 1\), expected \(K, K\) with K >= 2"),
        (np.zeros(4), ["a", "b"], r"received shape \(4,\)"),
        (np.zeros((3, 3)), ["a", "b"], r"received shape \(3, 3\) and 2 class names, expected \(2, 2\)"),
        (np.array([[1, -1], [0, 2]]), ["a", "b"], "negative"),
    ],
)
def test_confusion_matrix_validation(matrix, names, pattern, out_dir: Path) -> None:
    with pytest.raises(ValueError, match=pattern):
        report.plot_confusion_matrix(matrix, names, out_dir / "cm.png")
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- precision-recall


def test_pr_curve_sklearn_style_thresholds(out_dir: Path) -> None:
    precision, recall, thresholds, best = pr_points()
    assert len(thresholds) == len(precision) - 1
    out = report.plot_pr_curve(precision, recall, thresholds, best, out_dir / "pr.png")
    assert out == out_dir / "pr.png"
    assert_png(out)


def test_pr_curve_one_threshold_per_point(out_dir: Path) -> None:
    precision, recall, thresholds, best = pr_points()
    assert_png(report.plot_pr_curve(precision[:-1], recall[:-1], thresholds, best, out_dir / "pr.png"))


def test_pr_curve_single_point(out_dir: Path) -> None:
    assert_png(report.plot_pr_curve(np.array([0.0]), np.array([0.0]), np.array([0.5]), 0.5, out_dir / "pr.png"))


@pytest.mark.parametrize(
    ("precision", "recall", "thresholds", "best", "pattern"),
    [
        (np.zeros((2, 5)), np.zeros(5), np.zeros(4), 0.5, r"precision: received shape \(2, 5\)"),
        (np.zeros(5), np.zeros(4), np.zeros(4), 0.5, r"recall: received shape \(4,\), expected \(5,\)"),
        (np.zeros(5), np.zeros(5), np.zeros(2), 0.5, r"thresholds: received shape \(2,\), expected \(5,\) or \(4,\)"),
        (np.zeros(0), np.zeros(0), np.zeros(0), 0.5, r"precision: received shape \(0,\)"),
        (np.zeros(5), np.zeros(5), np.zeros(4), float("nan"), "best_threshold"),
    ],
)
def test_pr_curve_validation(precision, recall, thresholds, best, pattern, out_dir: Path) -> None:
    with pytest.raises(ValueError, match=pattern):
        report.plot_pr_curve(precision, recall, thresholds, best, out_dir / "pr.png")
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- RGB composite


def test_rgb_band_indices_landslide4sense() -> None:
    assert report.rgb_band_indices(L4S_BANDS) == (3, 2, 1)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["B01", "B02", "B03", "B04", "B08"], (3, 2, 1)),
        (["nir", "Blue", "Green", "Red"], (3, 2, 1)),
        (["b1", "b2", "b3", "slope", "DEM"], (0, 1, 2)),
        (["B4", "B3", "nir"], (0, 1, 2)),  # no B2: not the Sentinel-2 triple, so the first three
        (["x"], (0, 0, 0)),
        (["x", "y"], (0, 0, 0)),
    ],
)
def test_rgb_band_indices_fallbacks(names, expected) -> None:
    assert report.rgb_band_indices(names) == expected


@pytest.mark.filterwarnings("error")
def test_rgb_composite_picks_b4_b3_b2_for_landslide4sense() -> None:
    h, w = 20, 30
    image = np.empty((h, w, len(L4S_BANDS)), dtype=np.float32)
    for k in range(len(L4S_BANDS)):
        image[:, :, k] = 100.0 * (k + 1)  # every band a distinct constant ...
    yy, xx = np.mgrid[:h, :w]
    image[:, :, L4S_BANDS.index("B4")] = xx  # ... but red varies along x only,
    image[:, :, L4S_BANDS.index("B3")] = yy  # green along y only,
    # and B2 (blue) stays constant: it comes out as flat mid-grey.
    rgb = report.rgb_composite(image, L4S_BANDS)
    assert rgb.shape == (h, w, 3)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert np.all(np.diff(red, axis=0) == 0) and np.all(np.diff(red[0]) >= 0) and red[0, -1] > red[0, 0]
    assert np.all(np.diff(green, axis=1) == 0) and green[-1, 0] > green[0, 0]
    assert np.all(blue == 0.5)


def test_rgb_composite_percentile_stretch() -> None:
    values = np.linspace(0.0, 1000.0, 101 * 3).reshape(101, 3, 1)
    values[0, 0, 0] = 1e9  # an outlier does not wash out the rest
    rgb = report.rgb_composite(np.repeat(values, 3, axis=2), ["red", "green", "blue"])
    assert rgb.min() == 0.0 and rgb.max() == 1.0
    assert 0.3 < np.median(rgb) < 0.7


@pytest.mark.filterwarnings("error")
def test_rgb_composite_nan_safe() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(16, 16, 14))
    image[:4, :4, :] = np.nan
    image[5, 5, 3] = np.inf
    image[..., 1] = np.nan  # B2 (blue) entirely missing
    rgb = report.rgb_composite(image, L4S_BANDS)
    assert np.all(np.isfinite(rgb))
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert np.all(rgb[:4, :4] == 0.0)
    assert rgb[5, 5, 0] == 0.0
    assert np.all(rgb[..., 2] == 0.0)
    assert rgb[8:, 8:, 0].max() > 0.5


def test_rgb_composite_single_band_is_grey() -> None:
    image = np.arange(64, dtype=np.int16).reshape(8, 8, 1)
    rgb = report.rgb_composite(image, ["slope"])
    assert rgb.shape == (8, 8, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[0, 0, 0] == 0.0 and rgb[-1, -1, 0] == 1.0


def test_rgb_composite_generic_names_use_first_three_bands() -> None:
    names = default_band_names(5)
    image = np.zeros((4, 4, 5))
    image[0, 0, 0] = 1.0
    image[1, 1, 1] = 1.0
    image[2, 2, 2] = 1.0
    image[3, 3, 3:] = 1.0
    rgb = report.rgb_composite(image, names)
    assert rgb[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert rgb[1, 1].tolist() == [0.0, 1.0, 0.0]
    assert rgb[2, 2].tolist() == [0.0, 0.0, 1.0]
    assert rgb[3, 3].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("shape", "names", "pattern"),
    [
        ((8, 8), ["a"], r"received shape \(8, 8\), expected \(H, W, C\)"),
        ((8, 8, 3), ["a", "b"], r"received shape \(8, 8, 3\) with 2 band names, expected \(H, W, 2\)"),
        ((1, 8, 8, 3), ["a", "b", "c"], r"received shape \(1, 8, 8, 3\)"),
    ],
)
def test_rgb_composite_validation(shape, names, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        report.rgb_composite(np.zeros(shape), names)


# --------------------------------------------------------------------------- sample grid


def test_samples_with_probabilities(out_dir: Path) -> None:
    images, truths, predictions, probabilities = sample_batch(n=5)
    out = report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png", probabilities=probabilities)
    assert out == out_dir / "s.png"
    width, height = assert_png(out)
    assert height > width  # five rows of four columns, plus titles and legend


def test_samples_without_probabilities(out_dir: Path) -> None:
    images, truths, predictions, _ = sample_batch(n=2)
    width_3col, _ = assert_png(report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png"))
    (out_dir / "s.png").unlink()
    images, truths, predictions, probabilities = sample_batch(n=2)
    width_4col, _ = assert_png(
        report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png", probabilities=probabilities)
    )
    assert width_4col > width_3col


def test_samples_max_samples_limits_rows(out_dir: Path) -> None:
    images, truths, predictions, _ = sample_batch(n=6)
    _, tall = assert_png(report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png"))
    (out_dir / "s.png").unlink()
    _, short = assert_png(
        report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png", max_samples=2),
        min_size=(200, 150),
    )
    assert short < tall / 2


def test_samples_multiclass_nan_and_few_bands(out_dir: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.random((2, 16, 16, 1))
    images[0, :3] = np.nan
    truths = rng.integers(0, 4, (2, 16, 16)).astype(float)  # integer-valued floats are fine
    predictions = rng.integers(0, 4, (2, 16, 16))
    assert_png(report.plot_samples(images, truths, predictions, ["DEM"], out_dir / "s.png"), min_size=(200, 150))


def test_samples_validation(out_dir: Path) -> None:
    images, truths, predictions, probabilities = sample_batch(n=2, size=16)
    calls = [
        (dict(images=images[0]), r"images: received shape \(16, 16, 14\), expected \(N, H, W, C\)"),
        (dict(band_names=L4S_BANDS[:3]), r"images: received shape \(2, 16, 16, 14\) with 3 band names"),
        (dict(truths=truths[:1]), r"truths: received shape \(1, 16, 16\), expected \(2, 16, 16\)"),
        (dict(predictions=predictions[..., None]), r"predictions: received shape \(2, 16, 16, 1\), expected \(2, 16, 16\)"),
        (dict(probabilities=probabilities[:, :8]), r"probabilities: received shape \(2, 8, 16\), expected \(2, 16, 16\)"),
        (dict(truths=truths + 0.5), "expected integer class ids"),
        (dict(predictions=predictions - 1), "received class id -1"),
        (dict(max_samples=0), "max_samples: received 0"),
    ]
    for override, pattern in calls:
        kwargs = dict(images=images, truths=truths, predictions=predictions, band_names=L4S_BANDS,
                      out_png=out_dir / "s.png")
        kwargs.update(override)
        with pytest.raises(ValueError, match=pattern):
            report.plot_samples(**kwargs)
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- atomic writes


def test_failed_render_leaves_previous_png_and_no_temp_file(out_dir: Path, monkeypatch) -> None:
    out = out_dir / "cm.png"
    matrix = np.array([[5, 1], [2, 7]])
    report.plot_confusion_matrix(matrix, ["a", "b"], out)
    before = out.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        fname.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        report.plot_confusion_matrix(matrix, ["a", "b"], out)
    assert out.read_bytes() == before
    assert [p.name for p in out_dir.iterdir()] == ["cm.png"]


# --------------------------------------------------------------------------- raster quicklooks


def _write_raster(path: Path, data: np.ndarray, nodata: float | None, names: tuple[str, ...] | None = None,
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


@pytest.fixture(scope="module")
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
        "scene": _write_raster(root / "scene.tif", scene, -9999.0, ("B2", "B3", "B4", "B8")),
        "probabilities": _write_raster(root / "scene_probabilities.tif", probability, 255),
        "mask": _write_raster(root / "scene_mask.tif", mask, 255),
        "plain": _write_raster(root / "plain.tif", scene[:2, :40, :50], -9999.0, cog=False),
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


@pytest.mark.parametrize("kind", ["scene", "probabilities", "mask"])
def test_quicklook_reads_decimated_and_writes_a_png(kind: str, rasters, read_shapes, out_dir: Path) -> None:
    out = report.quicklook_png(rasters[kind], out_dir / f"{kind}.png", kind, max_side=256)
    assert out == out_dir / f"{kind}.png"
    width, height = assert_png(out, min_size=(200, 200))
    assert width <= 256 + 300 and height <= 256 + 150  # the image plus title, colour bar or legend
    assert read_shapes and None not in read_shapes
    assert all(max(shape[1:]) <= 256 for shape in read_shapes)  # never the 1100 x 700 full resolution
    expected_bands = {"scene": 3, "probabilities": 1, "mask": 1}[kind]  # B4, B3, B2 only: B8 is not read
    assert read_shapes == [(expected_bands, 256, 163)]


def test_quicklook_nodata_and_scaling_of_the_decimated_read(rasters) -> None:
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(rasters["scene"]) as src:
        bands = report._read_decimated(src, [3, 2, 1], (110, 70), Resampling.average)
    assert bands.shape == (3, 110, 70)
    assert np.isnan(bands[:, :25, :15]).all()  # -9999 became NaN (transparent), not a stretched value
    assert np.isfinite(bands[:, 40:, 30:]).all() and 900 < np.nanmean(bands) < 1500
    with rasterio.open(rasters["mask"]) as src:
        classes = report._read_decimated(src, [1], (110, 70), Resampling.nearest)[0]
    assert set(np.unique(classes[np.isfinite(classes)])) == {0.0, 1.0}


def test_quicklook_small_raster_is_not_enlarged(rasters, read_shapes, out_dir: Path) -> None:
    report.quicklook_png(rasters["plain"], out_dir / "small.png", "scene", max_side=768)  # 2 bands: grey
    assert read_shapes == [(1, 40, 50)]
    assert_png(out_dir / "small.png", min_size=(100, 100))


def test_quicklook_validation(rasters, tmp_path: Path, out_dir: Path) -> None:
    from geoseg_batch.errors import DataError, InputError, MissingInputError

    with pytest.raises(InputError, match="expected one of scene, probabilities, mask"):
        report.quicklook_png(rasters["mask"], out_dir / "x.png", "rgb")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="max_side"):
        report.quicklook_png(rasters["mask"], out_dir / "x.png", "mask", max_side=4)
    with pytest.raises(MissingInputError, match="not found"):
        report.quicklook_png(tmp_path / "missing.tif", out_dir / "x.png", "mask")
    store = tmp_path / "scene.zarr"
    store.mkdir()
    with pytest.raises(InputError, match="pass the COG"):
        report.quicklook_png(store, out_dir / "x.png", "mask")
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(DataError, match="not a raster"):
        report.quicklook_png(junk, out_dir / "x.png", "scene")
    assert list(out_dir.iterdir()) == []


def test_prediction_quicklooks_of_a_predict_output(rasters, out_dir: Path) -> None:
    entry = {"scene": str(rasters["scene"]), "zarr": "ignored.zarr", "mask_cog": str(rasters["mask"]),
             "probability_cog": str(rasters["probabilities"])}
    made = report.prediction_quicklooks(entry, out_dir, max_side=128)
    assert [caption for caption, _ in made] == [
        "scene: scene (scene.tif)", "scene: probabilities (scene_probabilities.tif)",
        "scene: mask (scene_mask.tif)"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(png.name for _, png in made)
    only_zarr = report.prediction_quicklooks({"scene": str(rasters["scene"]), "mask_cog": None}, out_dir / "z", 128)
    assert [png.name for _, png in only_zarr] == ["scene_scene.png"]


# --------------------------------------------------------------------------- HTML run report


def _pngs(directory: Path) -> list[tuple[str, Path]]:
    first = report.plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["a", "b"], directory / "cm.png")
    precision, recall, thresholds, best = pr_points()
    second = report.plot_pr_curve(precision, recall, thresholds, best, directory / "pr.png")
    return [("confusion <matrix>", first), ("PR curve", second)]


SUMMARY = {"scenes": 2, "megapixels": 26.214, "tiles_total": 400, "tiles_computed": 396, "wall_s": 12.3456,
           "mpx_per_s": 2.1234, "peak_worker_rss_bytes": 3 * 1024**3, "phases": {"setup_s": 1.5, "tiles_s": 9.0},
           "stitch": "exact", "scene_f1": None}
CONFIG = {"kind": "predict", "name": "nightly", "scenes": [Path("/data/a.tif"), Path("/data/b.tif")], "tile": 512,
          "cluster": {"workers": 2, "scheduler": None}}


def test_run_report_is_one_self_contained_html_file(tmp_path: Path) -> None:
    import base64
    import html as html_lib

    images = _pngs(tmp_path / "png")
    out_dir = tmp_path / "report"
    path = report.write_run_report(out_dir / "report.html", "Run <nightly> & co", SUMMARY, CONFIG, images,
                                   metrics={"f1": 0.91234, "iou": 0.8, "per_class": {"landslide": 0.7}})
    assert path == out_dir / "report.html"
    assert [p.name for p in out_dir.iterdir()] == ["report.html"], "one file, no temp files"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for caption, png in images:  # each PNG embedded whole, with its caption
        assert f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" in text
        assert f"<figcaption>{html_lib.escape(caption)}</figcaption>" in text
    assert text.count("<img ") == 2
    # no external resources of any kind
    for external in ("<script", "<link", 'src="http', "src='http", "url(", "@import"):
        assert external not in text
    assert "<title>Run &lt;nightly&gt; &amp; co</title>" in text
    # summary, metrics and config
    for expected in ("<th>tiles_total</th>", ">400<", ">26.21<", ">12.35<", "3.0 GiB (3,221,225,472 B)",
                     "<th>setup_s</th>", ">exact<", "<th>f1</th>", ">0.9123<", "<th>landslide</th>"):
        assert expected in text, expected
    config_block = text.split('<pre class="config">')[1].split("</pre>")[0]
    assert yaml.safe_load(html_lib.unescape(config_block)) == {
        "kind": "predict", "name": "nightly", "scenes": ["/data/a.tif", "/data/b.tif"], "tile": 512,
        "cluster": {"workers": 2, "scheduler": None}}


def test_run_report_without_metrics_or_images_and_replacing_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old")
    report.write_run_report(path, "t", {"wall_s": 1.0}, {"kind": "train"}, [])
    text = path.read_text()
    assert "Metrics" not in text and "<img" not in text and "Quicklooks" not in text
    assert "kind: train" in text
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_run_report_bad_image_writes_nothing(tmp_path: Path) -> None:
    from geoseg_batch.errors import InputError, MissingInputError

    path = tmp_path / "out" / "report.html"
    with pytest.raises(MissingInputError, match="missing.png"):
        report.write_run_report(path, "t", {}, {}, [("gone", tmp_path / "missing.png")])
    not_png = tmp_path / "notes.txt"
    not_png.write_text("hello")
    with pytest.raises(InputError, match="not PNG"):
        report.write_run_report(path, "t", {}, {}, [("text", not_png)])
    assert not path.exists() and not (tmp_path / "out").exists()


def test_run_report_embeds_quicklooks(rasters, tmp_path: Path) -> None:
    entry = {"scene": str(rasters["scene"]), "mask_cog": str(rasters["mask"]),
             "probability_cog": str(rasters["probabilities"])}
    images = report.prediction_quicklooks(entry, tmp_path / "quicklooks", max_side=96)
    path = report.write_run_report(tmp_path / "report.html", "predict", SUMMARY, CONFIG, images)
    assert path.read_text().count("data:image/png;base64,") == 3
