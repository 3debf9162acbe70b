"""Geometry of a built model for tiled inference: border-influence radius and size multiple.

The *receptive radius* is how far (in input pixels, on each side) an output pixel can
see: the halo a tile needs so that cropping it gives the same answer as a whole-scene pass.
The *size multiple* is the product of the downsampling strides (``2**depth`` for a U-Net):
tile origins and padded sizes must be multiples of it so pooling grids line up.

Both are computed by walking the model's functional graph, propagating for each tensor its
radius r and its *jump* j (input pixels per feature pixel): a k-wide convolution adds
ceil((k-1)/2) * dilation * j, a p-wide pooling adds (p-1) * j and multiplies j by its stride,
an upsampling by s divides j by s and adds (s-1) * j_out (a coarse cell covers s fine pixels),
merges take the maximum, element-wise layers change nothing. The bound is conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

_ELEMENTWISE = (
    layers.InputLayer, layers.BatchNormalization, layers.Activation, layers.ReLU, layers.Dropout,
    layers.SpatialDropout2D, layers.LayerNormalization, layers.GroupNormalization, layers.Rescaling,
    layers.Normalization, layers.LeakyReLU,
)
_MERGES = (layers.Concatenate, layers.Add, layers.Multiply, layers.Average, layers.Maximum, layers.Subtract)


@dataclass(frozen=True)
class ModelGeometry:
    """What tiled inference needs to know about a model's spatial behaviour."""

    receptive_radius: int  # input pixels each side
    size_multiple: int  # 2**depth for a U-Net


def _pair(value: int | tuple[int, ...]) -> int:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return max(int(v) for v in values)


def _propagate(op: keras.Operation, inputs: list[tuple[float, float]]) -> tuple[float, float]:
    """(radius, jump) of ``op``'s output from its inputs'."""
    radius, jump = max(r for r, _ in inputs), min(j for _, j in inputs)
    if isinstance(op, _ELEMENTWISE) or isinstance(op, _MERGES):
        return radius, jump
    if isinstance(op, layers.Conv2DTranspose):
        stride = _pair(op.strides)
        out_jump = jump / stride
        return radius + (_pair(op.kernel_size) - 1) * out_jump, out_jump
    if isinstance(op, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)):
        half = math.ceil((_pair(op.kernel_size) - 1) / 2)
        return radius + half * _pair(op.dilation_rate) * jump, jump * _pair(op.strides)
    if isinstance(op, (layers.MaxPooling2D, layers.AveragePooling2D)):
        return radius + (_pair(op.pool_size) - 1) * jump, jump * _pair(op.strides)
    if isinstance(op, layers.UpSampling2D):
        out_jump = jump / _pair(op.size)
        return radius + (_pair(op.size) - 1) * out_jump, out_jump
    raise ValueError(
        f"cannot derive the receptive field through layer {op.name!r} ({type(op).__name__}); "
        "use stock convolution, pooling, upsampling, merge and element-wise layers"
    )


def model_geometry(model: keras.Model) -> ModelGeometry:
    """Receptive radius and size multiple of a functional model."""
    state = {id(t): (0.0, 1.0) for t in model.inputs}
    max_jump = 1.0
    for op in model.operations:
        for node in op._inbound_nodes:
            if not node.input_tensors:
                continue
            known = [state[id(t)] for t in node.input_tensors if id(t) in state]
            if len(known) != len(node.input_tensors):
                continue  # a node of a shared layer outside this model
            result = _propagate(op, known)
            max_jump = max(max_jump, result[1])
            for tensor in node.output_tensors:
                state[id(tensor)] = result
    radius = max(state[id(t)][0] for t in model.outputs)
    return ModelGeometry(receptive_radius=math.ceil(radius), size_multiple=int(round(max_jump)))
