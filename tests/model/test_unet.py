"""Architectures, heads and the computed geometry (receptive radius, size multiple)."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg_batch.model.geometry import model_geometry
from geoseg_batch.model.unet import build_model


@pytest.mark.parametrize("model_type", ["unet", "attention_unet"])
@pytest.mark.parametrize("classes", [2, 3])
def test_heads_and_shapes(model_type, classes):
    model = build_model(model_type, bands=5, classes=classes, depth=2, base_filters=4, seed=0)
    out = np.asarray(model(np.random.default_rng(0).random((2, 24, 40, 5), dtype=np.float32)))
    assert out.shape == (2, 24, 40, 1 if classes == 2 else classes)
    assert (out >= 0).all() and (out <= 1).all()
    if classes > 2:
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_attention_gates_are_on_every_skip():
    model = build_model("attention_unet", bands=3, depth=3, base_filters=4)
    assert sorted(l.name for l in model.layers if l.name.endswith("_gate")) == ["att0_gate", "att1_gate", "att2_gate"]
    assert not [l for l in build_model("unet", bands=3, depth=3, base_filters=4).layers if "att" in l.name]


def test_geometry_formula():
    # depth d, two 3x3 convs per level, 2x2 pools, 2x2 stride-2 transposed convs:
    # encoder 2 + sum_l (1 + 2) 2**l ..., computed by hand for depth 3 = 58
    geometry = model_geometry(build_model("unet", bands=3, depth=3, base_filters=4))
    assert geometry.size_multiple == 8 and geometry.receptive_radius == 58
    assert model_geometry(build_model("attention_unet", bands=3, depth=2, base_filters=4)).size_multiple == 4


@pytest.mark.parametrize("model_type", ["unet", "attention_unet"])
def test_receptive_radius_bounds_real_influence(model_type):
    """Changing input pixels farther than the radius never changes the centre output; nearer ones do."""
    model = build_model(model_type, bands=2, depth=2, base_filters=4, batch_norm=False, seed=1)
    radius = model_geometry(model).receptive_radius
    size = 2 * radius + 32
    size += -size % 4
    rng = np.random.default_rng(2)
    base = rng.normal(size=(1, size, size, 2)).astype(np.float32)
    centre = size // 2
    far = base.copy()
    far[0, np.abs(np.arange(size) - centre) > radius] = rng.normal(size=(1, 2))  # rows beyond the radius
    far[0, :, np.abs(np.arange(size) - centre) > radius] = rng.normal(size=(1, 2))
    out = lambda x: np.asarray(model(x))[0, centre, centre, 0]  # noqa: E731
    assert out(far) == pytest.approx(out(base), abs=1e-6)
    near = base.copy()
    near[0, centre - radius // 2: centre + radius // 2 + 1, centre - radius // 2: centre + radius // 2 + 1] += 3.0
    assert abs(out(near) - out(base)) > 1e-4


def test_bad_architecture_values_raise_value_error():
    with pytest.raises(ValueError, match="model_type must be one of"):
        build_model("segformer")
    with pytest.raises(ValueError, match="depth must be 1..6, got 9"):
        build_model(depth=9)
