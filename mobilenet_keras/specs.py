"""MobileNet V1 as data: the rows of Table 1 of Howard et al. 2017 (arXiv 1704.04861).

The builder (`mobilenet_keras.model`), the tf_keras twin used for quantization-aware
training and the complexity counter all read this one table, so the architecture is
written down exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvSpec:
    """The 3x3 full convolution stem (`conv1`)."""

    filters: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class DepthwiseSeparableSpec:
    """One depthwise-separable block: 3x3 depthwise (`conv_dw_{id}`) then 1x1 pointwise (`conv_pw_{id}`)."""

    block_id: int
    stride: int
    filters: int


STEM = ConvSpec(filters=32, kernel=3, stride=2)

# (block id, depthwise stride, pointwise output filters) at width multiplier 1.0.
BLOCKS: tuple[DepthwiseSeparableSpec, ...] = tuple(
    DepthwiseSeparableSpec(block_id, stride, filters)
    for block_id, stride, filters in (
        (1, 1, 64),
        (2, 2, 128),
        (3, 1, 128),
        (4, 2, 256),
        (5, 1, 256),
        (6, 2, 512),
        (7, 1, 512),
        (8, 1, 512),
        (9, 1, 512),
        (10, 1, 512),
        (11, 1, 512),
        (12, 2, 1024),
        (13, 1, 1024),
    )
)

DEPTHWISE_KERNEL = 3


def convolution_names() -> list[str]:
    """Names of every convolution of the backbone, in order: `conv1`, `conv_dw_1`, `conv_pw_1`, ..."""
    names = ["conv1"]
    for spec in BLOCKS:
        names += [f"conv_dw_{spec.block_id}", f"conv_pw_{spec.block_id}"]
    return names


def pointwise_names() -> list[str]:
    """Names of the 1x1 convolutions (`conv_pw_1` ... `conv_pw_13`), which hold nearly all the weights."""
    return [f"conv_pw_{spec.block_id}" for spec in BLOCKS]


def scaled_filters(filters: int, alpha: float) -> int:
    """Filters after the width multiplier, truncated as keras.applications does (so its weights fit)."""
    return int(filters * alpha)


@dataclass(frozen=True)
class BlockPlan:
    """Where one block runs once `output_stride` is applied: its real stride and dilation."""

    spec: DepthwiseSeparableSpec
    stride: int
    dilation: int
    output_stride: int  # cumulative stride of this block's output relative to the input


def plan_blocks(output_stride: int | None = None) -> list[BlockPlan]:
    """Strides and dilations of every block for a target output stride (None means 32).

    As in TF-slim and the TF Model Garden: once the cumulative stride reaches the target,
    later strides become 1 and the following depthwise convolutions dilate by the skipped
    factor, so the receptive field (and the ImageNet weights) stay valid.
    """
    target = 32 if output_stride is None else output_stride
    current = STEM.stride
    rate = 1
    plans = []
    for spec in BLOCKS:
        if current * spec.stride > target:
            # This block's convolution runs at the rate accumulated so far; later ones dilate more.
            plans.append(BlockPlan(spec, stride=1, dilation=rate, output_stride=current))
            rate *= spec.stride
        else:
            current *= spec.stride
            plans.append(BlockPlan(spec, stride=spec.stride, dilation=rate, output_stride=current))
    return plans
