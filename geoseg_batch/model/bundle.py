"""The model bundle: one ``.keras`` file carrying everything inference needs.

A bundle is a standard Keras 3 ``.keras`` archive (a zip of config.json, metadata.json and
model.weights.h5) with one more member, ``geoseg_bundle.json``: band names, normalization
statistics, class names, threshold, the training chip size, the size multiple and
receptive radius (for tiled inference), the architecture, and provenance (data checksum,
resolved config, package version, test metrics). Keras ignores the extra member, so the
file still opens with ``keras.saving.load_model``; we load with ``safe_mode=True``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from geoseg_batch.data.stats import BandStats
from geoseg_batch.errors import BundleError, MissingInputError
from geoseg_batch.io.publish import atomic_path
from geoseg_batch.io.urls import Location, is_url

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

METADATA_MEMBER = "geoseg_bundle.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class BundleMetadata:
    """What inference needs besides the weights."""

    model_type: str
    band_names: tuple[str, ...]
    classes: tuple[str, ...]
    threshold: float
    input_size: tuple[int, int]  # (rows, cols) of the training chips
    size_multiple: int
    receptive_radius: int
    normalization: dict[str, list[float]]  # mean, std per band
    architecture: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    resolution_m: float | None = None  # ground sampling distance of the training chips (None: not recorded)

    @property
    def bands(self) -> int:
        return len(self.band_names)

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["band_names"] = list(self.band_names)
        payload["classes"] = list(self.classes)
        payload["input_size"] = list(self.input_size)
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> BundleMetadata:
        payload = dict(payload)
        payload["band_names"] = tuple(payload["band_names"])
        payload["classes"] = tuple(payload["classes"])
        payload["input_size"] = tuple(payload["input_size"])
        return cls(**payload)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """(..., bands) image in the model's normalized space, float32."""
        mean = np.asarray(self.normalization["mean"], np.float32)
        std = np.asarray(self.normalization["std"], np.float32)
        return (np.asarray(image, np.float32) - mean) / np.maximum(std, 1e-6)


def normalization_of(stats: BandStats) -> dict[str, list[float]]:
    """The bundle's normalization block from band statistics."""
    return {"mean": list(stats.mean), "std": list(stats.std), "min": list(stats.minimum), "max": list(stats.maximum)}


@dataclass(frozen=True)
class Bundle:
    """A loaded model and its metadata."""

    model: Any  # keras.Model
    metadata: BundleMetadata
    path: Path


def save_bundle(model: Any, metadata: BundleMetadata, path: Path | str) -> Path:
    """Write the bundle atomically; returns its path (which must end in .keras)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"bundle path must end in .keras, got {path}")
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(metadata.to_dict(), indent=2))
    return path


def read_metadata(path: Location, cloud: CloudSettings | None = None) -> BundleMetadata:
    """A bundle's metadata, without loading the model; ``path``: a file, or an object-storage URL read with
    ``cloud`` (default: the AWS environment's settings), of which only the zip's directory and metadata member
    are fetched.

    Raises MissingInputError for a missing file or object, BundleError for a file that is not a bundle,
    ConfigError for refused credentials or an unreachable store (one line each, naming ``path``).
    """
    if is_url(path):
        from geoseg_batch.io.remote import CloudSettings, opened

        with opened(str(path), cloud or CloudSettings.of()) as handle:
            return _metadata_of(handle, str(path))
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such model bundle; pass the .keras file written by `geoseg-batch train`")
    return _metadata_of(path, str(path))


def _metadata_of(source: Path | BinaryIO, name: str) -> BundleMetadata:
    """The metadata of the bundle in ``source`` (a path or a seekable file object), called ``name`` in errors."""
    if not _is_zip(source):
        raise BundleError(f"{name}: not a model bundle (not a .keras archive); pass the .keras file written by "
                          "`geoseg-batch train`")
    with zipfile.ZipFile(source) as archive:
        if METADATA_MEMBER not in archive.namelist():
            raise BundleError(
                f"{name}: a Keras model without geoseg metadata ({METADATA_MEMBER}); "
                "bundles are written by `geoseg-batch train`"
            )
        payload = json.loads(archive.read(METADATA_MEMBER))
    if payload.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{name}: bundle format_version {payload.get('format_version')}; expected {FORMAT_VERSION}")
    return BundleMetadata.from_dict(payload)


def _is_zip(source: Path | BinaryIO) -> bool:
    """Whether ``source`` holds a zip archive (an object shorter than a zip's end record: no; s3fs raises
    ValueError for the seek before its start where a local file raises OSError)."""
    try:
        return zipfile.is_zipfile(source)
    except ValueError:
        return False


def load_bundle(path: Path | str) -> Bundle:
    """The bundle in the local file ``path``, loaded (safe_mode on, uncompiled); a worker gets a bundle in object
    storage as a local file first (:mod:`geoseg_batch.infer.bundle_source`): Keras opens paths."""
    import keras

    metadata = read_metadata(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged archive
        raise BundleError(f"{path}: the model inside the bundle could not be loaded: {exc}") from None
    return Bundle(model=model, metadata=metadata, path=Path(path))
