"""Residual classifiers: one topology, five ways to parametrise its convolutions.

CIFAR-style ResNet (He et al., 2016): a 3x3 stem, three stages of ``n`` basic
blocks with ``widths`` channels (stride 2 between stages), global average pooling
and a linear classifier; ``depth = 6 n + 2`` weighted layers. The families only
change the convolution in the 3x3 role (see `kronecker_zoo.models.convs`); the
stem, 1x1 shortcuts, BatchNorm and head are identical, so ``resnet_8`` and
``kron_resnet_8`` have the same topology.

Input: raw pixels `(batch, H, W, C)` in [0, 255] (normalised inside the model).
Output: logits `(batch, num_classes)`; or, with ``include_top=False``, the last
feature map `(batch, H/4, W/4, widths[-1])` (`H/2` for `drn`).
"""

import keras

from kronecker_zoo.models import convs
from kronecker_zoo.models.blocks import (
    basic_block,
    bn_relu,
    channels_last,
    dense_conv,
    model_input,
    normalize_pixels,
)
from kronecker_zoo.validation import int_sequence

DEFAULT_WIDTHS = (16, 32, 64)
KRON_SPATIAL_FACTORS = (3, 3)
KRON_RANK = 4


def blocks_per_stage(depth):
    """``n`` of a ``6 n + 2``-layer ResNet."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            "`depth` must be 6 * n + 2 with n >= 1 (8, 14, 20, 26, 32, ...). "
            f"Received: depth={depth!r}"
        )
    return (depth - 2) // 6


def _check_widths(widths):
    message = f"`widths` must be three positive ints. Received: widths={widths!r}"
    try:
        widths = int_sequence(widths, "widths")
    except ValueError:
        raise ValueError(message) from None
    if len(widths) != 3:
        raise ValueError(message)
    return widths


def residual_classifier(conv, depth, widths, input_shape, num_classes, include_top,
                        classifier_activation, name, dilate_last_stage=False,
                        degridding_layers=0):
    """Builds the shared topology around the family's ``conv`` (see module docstring).

    ``dilate_last_stage``: the third stage keeps its input resolution and uses
    dilation 2 instead of stride 2 (DRN); ``degridding_layers``: that many 3x3
    conv-BN-ReLU layers without residual connections at the end (DRN-C).
    """
    n = blocks_per_stage(depth)
    widths = _check_widths(widths)
    inputs = model_input(input_shape)
    x = normalize_pixels(inputs)
    x = dense_conv(x, widths[0], 3, name="stem_conv")
    x = bn_relu(x, "stem")
    for stage, filters in enumerate(widths, start=1):
        for block in range(1, n + 1):
            strides, dilation = 1, 1
            if stage > 1 and block == 1:
                strides = 2
            if stage == 3 and dilate_last_stage:
                strides, dilation = 1, 2
            x = basic_block(x, conv, filters, strides, dilation,
                            name=f"stage{stage}_block{block}")
    for i in range(1, degridding_layers + 1):
        x = dense_conv(x, widths[-1], 3, name=f"degrid{i}_conv")
        x = bn_relu(x, f"degrid{i}")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(num_classes, activation=classifier_activation,
                               name="predictions")(x)
    return keras.Model(inputs, x, name=name)


@channels_last
def resnet(depth=8, widths=DEFAULT_WIDTHS, input_shape=(28, 28, 1), num_classes=10,
           include_top=True, classifier_activation=None, name=None):
    """Dense baseline: plain 3x3 Conv2D everywhere."""
    return residual_classifier(convs.dense, depth, widths, input_shape, num_classes,
                               include_top, classifier_activation, name or f"resnet_{depth}")


@channels_last
def kron_resnet(depth=8, widths=DEFAULT_WIDTHS, input_shape=(28, 28, 1), num_classes=10,
                include_top=True, classifier_activation=None, spatial_factors=KRON_SPATIAL_FACTORS,
                rank=KRON_RANK, execution="factored", name=None):
    """Kronecker twin of `resnet`: each 3x3 conv becomes a factored KroneckerConv2D.

    Default: 9x9 kernels ``sum_{r<4} (3x3, a->c) (x) (3x3, b->d)`` with
    ``in = a b``, ``out = c d`` (e.g. 64 -> 64 as (8->8) (x) (8->8)): 4,608
    parameters instead of 36,864 for a 3x3 (331,776 for a dense 9x9).
    ``execution`` ("factored", "materialized", "auto") only changes how the same
    weights run: on 2 CPU cores and 28x28 inputs "materialized" trains faster.
    """
    conv = convs.kronecker_conv(spatial_factors, rank, execution)
    return residual_classifier(conv, depth, widths, input_shape, num_classes, include_top,
                               classifier_activation, name or f"kron_resnet_{depth}")


@channels_last
def lowrank_resnet(depth=8, widths=DEFAULT_WIDTHS, input_shape=(28, 28, 1), num_classes=10,
                   include_top=True, classifier_activation=None, rank=None, kernel_size=3,
                   name=None):
    """Low-rank baseline: LowRankConv2D (kx1 then 1xk); ``rank=None`` gives each layer
    the rank that matches the parameter count of `kron_resnet`'s default layer."""
    def budget(cin, cout):
        return convs.kronecker_conv_params(cin, cout, KRON_SPATIAL_FACTORS, KRON_RANK)

    conv = convs.low_rank_conv(rank, budget, kernel_size)
    return residual_classifier(conv, depth, widths, input_shape, num_classes, include_top,
                               classifier_activation, name or f"lowrank_resnet_{depth}")


@channels_last
def separable_resnet(depth=8, widths=DEFAULT_WIDTHS, input_shape=(28, 28, 1), num_classes=10,
                     include_top=True, classifier_activation=None, kernel_size=3, name=None):
    """Depthwise-separable baseline: SeparableConv2D (about the Kronecker budget)."""
    conv = convs.separable_conv(kernel_size)
    return residual_classifier(conv, depth, widths, input_shape, num_classes, include_top,
                               classifier_activation, name or f"separable_resnet_{depth}")


@channels_last
def drn(depth=8, widths=DEFAULT_WIDTHS, input_shape=(28, 28, 1), num_classes=10,
        include_top=True, classifier_activation=None, degridding_layers=2, name=None):
    """Dilated residual network, DRN-C style (Yu, Koltun & Funkhouser, 2017).

    `resnet`'s topology with the last stage at dilation 2 instead of stride 2
    (output stride 2, not 4) and ``degridding_layers`` plain conv-BN-ReLU layers
    (no residual) at the end to remove gridding artefacts.
    """
    return residual_classifier(convs.dense, depth, widths, input_shape, num_classes,
                               include_top, classifier_activation, name or f"drn_{depth}",
                               dilate_last_stage=True, degridding_layers=degridding_layers)
