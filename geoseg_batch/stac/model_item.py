"""The model bundle as a STAC Item of the machine-learning-model extension (MLM, ``pystac.extensions.mlm``).

The Item says what the model is (``mlm:name``, ``mlm:architecture``, ``mlm:framework`` Keras on TensorFlow,
``mlm:tasks`` semantic segmentation), what it reads (``mlm:input``: the bundle's bands in order, NHWC float32,
any size that is a multiple of the size multiple, z-score scaled with the bundle's statistics) and what it
gives (``mlm:output``: probabilities per class, with the classification extension's classes). Its one
asset is the bundle (role ``mlm:model``), with its checksum. It has no footprint (geometry null): a bundle
carries no training area. Predicted Items link to it (``derived_from``, with ``mlm:name``).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from typing import TYPE_CHECKING, Any

from geoseg_batch.io.urls import Location, stem

if TYPE_CHECKING:
    from geoseg_batch.model.bundle import BundleMetadata

ARCHITECTURES = {"unet": "U-Net", "attention_unet": "Attention U-Net"}
MODEL_TYPE = "application/octet-stream; framework=keras"
ARTIFACT_TYPE = "keras.Model.save"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


def model_item_id(checksum: str) -> str:
    """The id of a bundle's MLM Item: ``model-`` and the first 12 hex digits of its checksum."""
    return f"model-{checksum.split(':')[-1][:12]}"


def model_name(path: Location) -> str:
    """The ``mlm:name`` of the bundle at ``path``: its file's stem."""
    return stem(path)


def model_item(metadata: BundleMetadata, href: str, checksum: str, created: dt.datetime) -> Any:
    """The MLM ``pystac.Item`` of the bundle at ``href`` (its checksum ``checksum``, from ``io.publish.checksums``)
    with ``metadata``, dated ``created``."""
    import pystac
    from pystac.extensions.mlm import AcceleratorType, MLMExtension, TaskType

    name = model_name(href)
    item = pystac.Item(model_item_id(checksum), None, None, created,
                       {"geoseg:model_checksum": checksum, "geoseg:threshold": metadata.threshold,
                        "description": f"{ARCHITECTURES.get(metadata.model_type, metadata.model_type)} "
                                       f"segmenting {', '.join(metadata.classes)}"})
    item.common_metadata.created = created
    MLMExtension.ext(item, add_if_missing=True).apply(
        name=name, architecture=ARCHITECTURES.get(metadata.model_type, metadata.model_type),
        tasks=[TaskType.SEMANTIC_SEGMENTATION], input=[_model_input(metadata)], output=[_model_output(metadata)],
        framework="Keras", framework_version=_version("keras"), accelerator=AcceleratorType.AMD64,
        accelerator_constrained=False, accelerator_summary="CPU (TensorFlow), or an NVIDIA GPU",
        hyperparameters=_hyperparameters(metadata), pretrained=False, pretrained_source=None)
    item.add_asset("model", _model_asset(href, checksum, metadata))
    if "file:checksum" in item.assets["model"].extra_fields:
        item.stac_extensions.append(FILE_SCHEMA)
    return item


def _model_input(metadata: BundleMetadata) -> Any:
    """The MLM input: the bundle's bands, (batch, height, width, channel) float32, z-score scaled."""
    from pystac.extensions.mlm import InputStructure, ModelInput, ValueScaling, ValueScalingType
    from pystac.extensions.raster import DataType

    means, stds = metadata.normalization["mean"], metadata.normalization["std"]
    scaling = [ValueScaling.create(ValueScalingType.Z_SCORE, mean=float(m), stddev=float(s))
               for m, s in zip(means, stds)]
    model_input = ModelInput.create(
        name="image", bands=list(metadata.band_names),
        input=InputStructure.create(shape=[-1, -1, -1, metadata.bands], dim_order=["batch", "height", "width",
                                                                                  "channel"],
                                    data_type=DataType.FLOAT32),
        description=f"any height and width that are multiples of {metadata.size_multiple} (trained on "
                    f"{metadata.input_size[0]}x{metadata.input_size[1]} chips"
                    + (f" at {metadata.resolution_m} m" if metadata.resolution_m else "") + ")",
        value_scaling=None, resize_type=None)
    # The MLM schema's value_scaling is an array (one scaling per band); pystac's setter takes one object.
    model_input.properties["value_scaling"] = [scale.to_dict() for scale in scaling]
    return model_input


def _model_output(metadata: BundleMetadata) -> Any:
    """The MLM output: probabilities (one channel for a binary model, else one per class) and the classes."""
    from pystac.extensions.mlm import ModelOutput, ResultStructure, TaskType
    from pystac.extensions.raster import DataType

    from geoseg_batch.stac.results import class_objects

    channels = 1 if metadata.binary else len(metadata.classes)
    rule = (f"the class mask is probability >= {metadata.threshold} (class 1)" if metadata.binary
            else "the class mask is the argmax over the classes")
    return ModelOutput.create(
        name="probabilities", tasks=[TaskType.SEMANTIC_SEGMENTATION],
        result=ResultStructure.create(shape=[-1, -1, -1, channels], dim_order=["batch", "height", "width", "class"],
                                      data_type=DataType.FLOAT32),
        description=f"class probabilities ({'sigmoid' if metadata.binary else 'softmax'}); {rule}",
        classes=class_objects(metadata.classes))


def _hyperparameters(metadata: BundleMetadata) -> Any:
    """The MLM hyperparameters: the architecture's, the threshold and the tiling geometry."""
    from pystac.extensions.mlm import Hyperparameters

    return Hyperparameters.create(**{**metadata.architecture, "threshold": metadata.threshold,
                                     "size_multiple": metadata.size_multiple,
                                     "receptive_radius": metadata.receptive_radius, "backend": "tensorflow"})


def _model_asset(href: str, checksum: str, metadata: BundleMetadata) -> Any:
    """The bundle as the Item's ``mlm:model`` asset, with its bands (STAC 1.1 ``bands``) and checksum."""
    import pystac

    extra: dict[str, Any] = {"mlm:artifact_type": ARTIFACT_TYPE, "geoseg:checksum": checksum,
                             "bands": [{"name": name} for name in metadata.band_names]}
    if checksum.startswith("sha256:"):  # the file extension's multihash: 0x12 (sha2-256), 0x20 bytes
        extra["file:checksum"] = f"1220{checksum.split(':', 1)[1]}"
    return pystac.Asset(href, "model bundle (.keras with geoseg_bundle.json)", media_type=MODEL_TYPE,
                        roles=["mlm:model", "mlm:weights", "model", "data"], extra_fields=extra)


def _version(package: str) -> str | None:
    """The installed version of ``package`` (None when it is not installed)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
