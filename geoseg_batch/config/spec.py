"""The base of every job specification and what the specs share: the value types (literals), the help texts
several fields repeat, and the validators of the locations jobs hold (paths and URLs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

ModelType = Literal["unet", "attention_unet"]
LossName = Literal["dice", "bce_dice", "focal_tversky"]
SplitName = Literal["all", "train", "val", "test"]
StitchMode = Literal["exact", "blend"]
Precision = Literal["float32", "bfloat16"]
PRECISION_HELP = ("the forward pass' compute precision: bfloat16 runs about 2-3x faster on CPUs with AVX512-BF16/AMX "
                  "and on GPUs, with probabilities a few hundredths off float32's")
WAIT_HELP = ("when another run is writing to out, wait for it (at most wait_timeout_s) instead of refusing; "
             "if it published this job's results (same settings and inputs), do nothing")
OUT_HELP = ("output directory, or a prefix in object storage (s3://bucket/prefix: versions behind the pointer "
            "object current.json)")
WAIT_TIMEOUT_HELP = "how long wait waits for the run writing to out"
ResamplingMethod = Literal["nearest", "bilinear", "cubic", "lanczos", "average"]  # GDAL warp kernels



class Spec(BaseModel):
    """Base of every spec: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)



def _locations(value: Any) -> Any:
    """Paths and URLs as the strings a job holds (a URL must stay a string: Path folds s3:// into s3:/)."""
    if isinstance(value, (list, tuple)):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return str(value) if isinstance(value, Path) else value


def _local_directory(value: Any) -> Any:
    """``value`` unchanged unless it is a URL: this job's ``out`` is a local (or mounted) directory."""
    if isinstance(value, str) and "://" in value:
        raise ValueError(f"got {value!r}; this job writes to a local (or mounted) directory; predict and mosaic "
                         "write to object storage (s3://...): give a local path")
    return value


def _writable(value: str) -> str:
    """``value`` unchanged when results can be written there (a path, or an s3/gs/az URL naming a prefix)."""
    from geoseg_batch.io.urls import output_location

    output_location(value)
    return value


def _bundle_location(value: Any) -> Any:
    """A bundle's location as a job holds it: a URL as given, a path as pathlib spells it (``./m.keras`` is
    ``m.keras``: the spelling content keys were made from before URLs)."""
    from geoseg_batch.io.urls import is_url, location

    if not isinstance(value, (str, Path)):
        return value
    return location(value) if is_url(str(value)) or "://" in str(value) else str(Path(value))


def _shown(value: Path | str) -> str:
    """A location as an error names it: a URL as it is, a path resolved."""
    from geoseg_batch.io.urls import is_url

    return str(value) if is_url(value) else str(Path(value).resolve())
