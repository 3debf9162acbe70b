"""Batch norms folded into convolutions: the same function, fewer passes."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geoseg_batch.model.inference import foldable_pairs, inference_model
from geoseg_batch.model.unet import build_model


def _with_random_statistics(model, seed: int = 0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape))
    return model


@pytest.mark.parametrize("model_type,classes", [("unet", 2), ("attention_unet", 3)])
def test_folded_model_computes_the_same_probabilities(model_type, classes):
    model = _with_random_statistics(build_model(model_type, bands=5, classes=classes, depth=3, base_filters=8, seed=1))
    folded = inference_model(model)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(foldable_pairs(model)) == len(norms) == 2 * (2 * 3 + 1)  # every conv block's two
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    x = np.random.default_rng(2).normal(0, 1, (2, 48, 64, 5)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    assert np.abs(np.asarray(folded(x, training=False)) - expected).max() <= 1e-5
    assert np.asarray(model(x, training=False)).tobytes() == expected.tobytes()  # the original is untouched


def test_a_model_without_batch_norm_is_used_as_it_is():
    model = build_model("unet", bands=3, depth=2, base_filters=4, batch_norm=False)
    assert foldable_pairs(model) == {} and inference_model(model) is model


@pytest.mark.parametrize("model_type,classes", [("unet", 2), ("attention_unet", 3)])
def test_bfloat16_inference_computes_in_bfloat16_and_returns_close_float32_probabilities(model_type, classes):
    model = _with_random_statistics(build_model(model_type, bands=5, classes=classes, depth=3, base_filters=8, seed=1))
    half = inference_model(model, "bfloat16")
    assert {layer.compute_dtype for layer in half.layers[1:-1]} == {"bfloat16"}  # no casts back and forth
    assert half.layers[-1].compute_dtype == "float32" and {w.dtype for w in half.weights} == {"float32"}
    x = np.random.default_rng(2).normal(0, 1, (2, 48, 64, 5)).astype(np.float32)
    probabilities = np.asarray(half(x, training=False))
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - np.asarray(model(x, training=False))).max() <= 0.05
    assert model.layers[1].compute_dtype == "float32"  # the original is untouched


def test_an_unknown_precision_says_which_there_are():
    with pytest.raises(ValueError, match="precision: got 'float16', expected one of \\('float32', 'bfloat16'\\)"):
        inference_model(build_model("unet", bands=3, depth=2, base_filters=4), "float16")
