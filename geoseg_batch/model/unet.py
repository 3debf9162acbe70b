"""U-Net and Attention U-Net, built from stock Keras 3 layers (backend-agnostic).

Both take (rows, cols, bands) inputs of any size that is a multiple of ``2**depth`` and
return per-pixel probabilities: one sigmoid channel for two classes (binary), a softmax
over ``classes`` channels otherwise. Only built-in layers are used, so a saved model
loads with ``safe_mode=True`` and on any Keras backend.

The Attention U-Net gates each skip connection (Oktay et al. 2018, "Attention U-Net";
used for landslides by Nava et al. 2022): the skip features x and the decoder's upsampled
features g are projected to ``inter`` channels by 1x1 convolutions, added, passed through
ReLU, a 1x1 convolution to one channel and a sigmoid; x is scaled by that map. Gating with
the upsampled decoder features (rather than striding x down to the coarse grid) keeps every
tensor on one grid, which keeps the receptive-field walk in :mod:`geometry` exact.
"""

from __future__ import annotations

import keras
from keras import layers

MODEL_TYPES = ("unet", "attention_unet")


def _conv_block(x: keras.KerasTensor, filters: int, batch_norm: bool, name: str) -> keras.KerasTensor:
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def _attention_gate(skip: keras.KerasTensor, gating: keras.KerasTensor, inter: int, name: str) -> keras.KerasTensor:
    theta = layers.Conv2D(inter, 1, name=f"{name}_theta")(skip)
    phi = layers.Conv2D(inter, 1, name=f"{name}_phi")(gating)
    joined = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta, phi]))
    psi = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_psi")(joined)
    return layers.Multiply(name=f"{name}_gate")([skip, psi])


def validate_architecture(model_type: str, bands: int, classes: int, depth: int, base_filters: int,
                          dropout: float) -> None:
    """Raise ValueError naming the argument when an architecture setting is out of range."""
    checks = [
        (model_type in MODEL_TYPES, f"model_type must be one of {MODEL_TYPES}, got {model_type!r}"),
        (bands >= 1, f"bands must be >= 1, got {bands}"),
        (classes >= 2, f"classes must be >= 2 (2 = binary), got {classes}"),
        (1 <= depth <= 6, f"depth must be 1..6, got {depth}"),
        (base_filters >= 1, f"base_filters must be >= 1, got {base_filters}"),
        (0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def build_model(
    model_type: str = "unet",
    bands: int = 14,
    classes: int = 2,
    depth: int = 4,
    base_filters: int = 16,
    batch_norm: bool = True,
    dropout: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """A U-Net (``"unet"``) or Attention U-Net (``"attention_unet"``) for any input size multiple of 2**depth."""
    validate_architecture(model_type, bands, classes, depth, base_filters, dropout)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, bands), name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2**level, batch_norm, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, base_filters * 2**depth, batch_norm, "bottleneck")
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        skip = skips[level]
        if model_type == "attention_unet":
            skip = _attention_gate(skip, x, max(filters // 2, 1), f"att{level}")
        x = layers.Concatenate(name=f"concat{level}")([skip, x])
        x = _conv_block(x, filters, batch_norm, f"dec{level}")
        if dropout and level > 0:
            x = layers.Dropout(dropout, name=f"dec{level}_dropout")(x)
    binary = classes == 2
    outputs = layers.Conv2D(1 if binary else classes, 1, activation="sigmoid" if binary else "softmax",
                            dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=model_type)
