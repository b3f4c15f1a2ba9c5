"""Stateless tensor ops behind the layers: factored Kronecker convolution and matmul.

Everything here is written with ``keras.ops`` (TensorFlow and JAX backends) and
holds no Keras state. The plan functions are plain Python over shapes; the same
plan drives execution and the multiply-accumulate (MAC) counts of reports.

Factored convolution, for a kernel ``W = F_0 (x) ... (x) F_{m-1}`` with factor
``F_k`` of shape ``(kh_k, kw_k, in_k, out_k)`` (``F_0`` outermost): with the
channel index split as ``c = (c_0, ..., c_{m-1})``,

    y[p, (o_0..o_{m-1})] = sum_{u_k, c_k} x[p + sum_k d_k u_k, (c_0..c_{m-1})]
                                          * prod_k F_k[u_k, c_k, o_k],

where ``d_k = prod_{l > k} (kh_l, kw_l)``. It runs as a cascade: one factor at a
time convolves (at dilation ``d_k``) with all other channel axes folded into the
batch. The factors may run in any order and `step_order` picks the
cheapest (for ``(k x 1, in -> 1) (x) (1 x k, 1 -> out)``, low-rank spatial SVD, the
outer factor first: ``k (in + out)`` MACs per pixel instead of ``2 k in out``); a stride
goes on the last step that does not commute with subsampling. With the input padded once
(exactly as a plain convolution with ``W`` would pad it) and every step "valid",
the cascade equals the plain convolution everywhere, borders included.
"""

import dataclasses
import functools
import itertools
import math

import keras
from keras import ops

from kronecker_zoo.validation import positive_pair

PADDINGS = ("same", "valid")
PADDING_MODES = ("zeros", "reflect", "symmetric")


def normalize_padding(padding, padding_mode="zeros"):
    """Validate ``padding`` ("same"/"valid") and ``padding_mode``; return both.

    ``padding_mode`` other than "zeros" needs ``padding="same"``.
    """
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(
            f"`padding` must be one of {PADDINGS}. Received: padding={padding!r}"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"`padding_mode` must be one of {PADDING_MODES}. "
            f"Received: padding_mode={padding_mode!r}"
        )
    if padding.lower() == "valid" and padding_mode != "zeros":
        raise ValueError(
            f'`padding_mode` only applies to padding="same" ("valid" pads nothing). '
            f"Received: padding={padding!r}, padding_mode={padding_mode!r}"
        )
    return padding.lower(), padding_mode


def conv_output_length(length, kernel_extent, stride, padding):
    """Output length of a convolution (``None`` stays ``None``), as in Keras."""
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return max(length - kernel_extent, -1) // stride + 1


def same_padding_amounts(length, kernel_extent, stride):
    """``(before, after)`` zero padding of TF/Keras "same" along one axis.

    ``out = ceil(n / s)``, ``total = max((out - 1) * s + k - n, 0)``,
    ``before = total // 2``. ``length`` may be a dynamic scalar tensor.
    """
    if stride == 1:
        total = kernel_extent - 1
        return total // 2, total - total // 2
    if isinstance(length, int):
        out = -(-length // stride)
        total = max((out - 1) * stride + kernel_extent - length, 0)
        return total // 2, total - total // 2
    out = (length + stride - 1) // stride
    total = ops.maximum((out - 1) * stride + kernel_extent - length, 0)
    return total // 2, total - total // 2


def pad_input(x, kernel_extent, strides, padding, padding_mode):
    """Pad ``x`` (N, H, W, C) once, as a plain conv with that extent would."""
    if padding == "valid":
        return x
    shape = ops.shape(x)
    top, bottom = same_padding_amounts(shape[1], kernel_extent[0], strides[0])
    left, right = same_padding_amounts(shape[2], kernel_extent[1], strides[1])
    widths = [(0, 0), (top, bottom), (left, right), (0, 0)]
    if padding_mode == "zeros":
        return ops.pad(x, widths)
    return ops.pad(x, widths, mode=padding_mode)


@dataclasses.dataclass(frozen=True)
class FactoredStep:
    """One convolution of the factored cascade.

    ``axis`` is the channel axis the step contracts (``in_k -> out_k``);
    ``groups`` how many independent channel groups are folded into the batch;
    ``conv_strides`` are passed to the convolution (only when its dilation is 1)
    and ``slice_strides`` subsample its output (``[::s]``) otherwise. ``padding``:
    ``((top, bottom), (left, right))`` padded onto the step's input (a "same" cascade
    at stride 1 pads each axis just before the first step that reaches along it);
    ``same_conv``: that padding is exactly the step's own "same" padding, so a zero-padded
    cascade lets the convolution pad (no separate PAD op).
    """

    axis: int
    kernel_size: tuple
    in_channels: int
    out_channels: int
    dilation: tuple
    conv_strides: tuple
    slice_strides: tuple
    groups: int
    padding: tuple = ((0, 0), (0, 0))
    same_conv: bool = False
    lowering: str = "batch"
    conv_channels: tuple = (0, 0)
    identity: int = 1
    macs_per_pixel: int = 0

    def extent(self):
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation))


LOWERINGS = ("batch", "channels")


def _relative_macs(steps, strides):
    """MACs per output pixel of the whole cascade (borders ignored): steps before the
    subsampling run on ``sh * sw`` times as many pixels."""
    scale, total = strides[0] * strides[1], 0
    for step in steps:
        total += step.macs_per_pixel * scale
        if step.conv_strides != (1, 1):
            total -= step.macs_per_pixel * (scale - 1)
            scale = 1
        elif step.slice_strides != (1, 1):
            scale = 1
    return total


def step_order(factor_shapes, strides=(1, 1), order="auto", lowering="batch", rank=1):
    """The order in which the cascade runs the factors (indices, outermost = 0).

    Every order is exact: the spatial steps are "valid" convolutions of the input padded
    once, so they commute, each contracting its own channel axis, and the stride is
    placed where subsampling commutes with the remaining steps (`factored_conv_plan`).
    ``"auto"`` picks the order with the fewest MACs under ``lowering`` (innermost first on
    ties); ``order`` may also be a permutation of ``range(m)``.
    """
    shapes = [tuple(int(v) for v in s) for s in factor_shapes]
    m = len(shapes)
    innermost_first = tuple(range(m - 1, -1, -1))
    if isinstance(order, str) and order == "auto":
        return min(itertools.permutations(innermost_first),
                   key=lambda o: _relative_macs(_plan_steps(
                       shapes, tuple(strides), o, "valid", rank, lowering), strides))
    order = tuple(int(k) for k in order)
    if sorted(order) != list(range(m)):
        raise ValueError(f"`order` must be 'auto' or a permutation of {list(range(m))}. "
                         f"Received: order={order!r}")
    return order


def factored_conv_plan(factor_shapes, strides=(1, 1), order="auto", padding="valid",
                       rank=1, lowering="batch"):
    """The cascade that executes ``conv(x, sum_r F_0[r] (x) ... (x) F_{m-1}[r], strides)``.

    Args:
        factor_shapes: m >= 2 shapes ``(kh, kw, in, out)``, outermost first.
        strides: ``(sh, sw)`` of the equivalent plain convolution.
        order: see `step_order` (default: the cheapest exact order).
        padding: "valid" (the input is padded already, if at all) or, at stride 1 only,
            "same": each axis is padded just before the first step whose kernel reaches
            along it (a step of extent 1 along an axis acts on each row or column alone,
            so padding after it is exact, for zeros as for reflections).
        rank: number of Kronecker terms (they share the first and last convolutions).
        lowering: how a step reaches its channel axis when the others are not 1:
            "batch" folds the other axes into the batch (transposes around each step;
            any number of factors); "channels" (two factors) keeps the channels where
            they are: the step on the fast (innermost, last) channel axis is one grouped
            convolution (``groups`` = the slow axis' size, the factor shared by all
            groups), the step on the slow axis one convolution with the kernel
            ``F_0 (x) I_n`` (``n`` = the fast axis' size: ``n`` times the MACs of that
            step, no data movement at all).

    Returns:
        A list of ``FactoredStep`` in execution order. Factor ``k`` always convolves at
        dilation ``d_k = prod_{l > k} (kh_l, kw_l)``. The stride is applied as early as
        the dilations allow: right after step ``k`` when every later step's dilation
        is a multiple of the stride (those dilations are then divided by it), else on
        the final output. ``macs_per_pixel`` is each step's cost per output pixel of
        that step, rank terms included.
    """
    shapes = [tuple(int(v) for v in s) for s in factor_shapes]
    if lowering not in LOWERINGS:
        raise ValueError(f"`lowering` must be one of {LOWERINGS}. "
                         f"Received: lowering={lowering!r}")
    if lowering == "channels" and len(shapes) != 2:
        raise ValueError(f'lowering="channels" runs two factors; got {len(shapes)}. '
                         f'Use lowering="batch".')
    if padding == "same" and tuple(strides) != (1, 1):
        raise ValueError("A strided cascade pads its input once (`pad_input`); "
                         "factored_conv_plan(padding='same') needs strides (1, 1).")
    order = step_order(shapes, strides, order, lowering, rank)
    return _plan_steps(shapes, tuple(strides), order, padding, rank, lowering)


def _plan_steps(shapes, strides, order, padding, rank, lowering):
    """`factored_conv_plan` for a given exact ``order``."""
    m = len(shapes)
    sh, sw = strides
    dil = []
    for k in range(m):
        dil.append((math.prod(s[0] for s in shapes[k + 1:]),
                    math.prod(s[1] for s in shapes[k + 1:])))
    # The stride is exact after every step whose kernel does not commute with
    # subsampling: a step commutes when, along each axis, it has one tap (it mixes
    # channels pixel by pixel) or its dilation is a multiple of the stride (it then
    # runs on the subsampled grid at dilation / stride). So the stride goes on the last
    # non-commuting step of the order (on the first step if there is none).
    def commutes(j):
        return all(shapes[j][axis] == 1 or dil[j][axis] % s == 0
                   for axis, s in ((0, sh), (1, sw)))

    blocking = [k for k in order if not commutes(k)]
    stride_step = blocking[-1] if blocking else order[0]
    subsampled = False
    total = (math.prod(s[0] for s in shapes), math.prod(s[1] for s in shapes))
    pending = [padding == "same" and e > 1 for e in total]
    steps, done = [], set()
    for i, k in enumerate(order):
        kh, kw, cin, cout = shapes[k]
        d = (dil[k][0] if kh > 1 else 1, dil[k][1] if kw > 1 else 1)  # 1 tap: no dilation
        if subsampled:
            d = (d[0] // sh if kh > 1 else 1, d[1] // sw if kw > 1 else 1)
        groups = math.prod(shapes[j][3] if j in done else shapes[j][2]
                           for j in range(m) if j != k)
        first, last = i == 0, i == m - 1
        identity = 1
        if lowering == "batch":
            # the rank terms ride on the first step's outputs and the last step's inputs;
            # middle steps run once per rank term (folded into the batch) on cin -> cout
            conv_channels = ((cin, cout) if not first and not last else
                             ((rank if last else 1) * cin, (rank if first else 1) * cout))
            macs = groups * kh * kw * cin * cout * rank
        elif k == m - 1:  # the fast axis: one grouped convolution, `groups` groups
            conv_channels = (groups * (rank if last else 1) * cin,
                             groups * (rank if first else 1) * cout)
            macs = groups * kh * kw * cin * cout * rank
        else:  # the slow axis: one convolution with F (x) I_n, n = the fast axis' size
            identity = groups
            conv_channels = (cin * identity * (rank if last else 1),
                             cout * identity * (rank if first else 1))
            macs = kh * kw * conv_channels[0] * conv_channels[1]
            groups = 1
        conv_s, slice_s = (1, 1), (1, 1)
        if k == stride_step and (sh, sw) != (1, 1):
            subsampled = True
            if d == (1, 1):
                conv_s = (sh, sw)
            else:
                slice_s = (sh, sw)
        extent = ((kh - 1) * d[0] + 1, (kw - 1) * d[1] + 1)
        pads = []
        for axis in (0, 1):
            if pending[axis] and extent[axis] > 1:
                pending[axis] = False
                pads.append(same_padding_amounts(None, total[axis], 1))
            else:
                pads.append((0, 0))
        same_conv = any(p != (0, 0) for p in pads) and all(
            p == same_padding_amounts(None, e, 1) for p, e in zip(pads, extent))
        steps.append(FactoredStep(k, (kh, kw), cin, cout, d, conv_s, slice_s, groups,
                                  tuple(pads), same_conv, lowering, conv_channels, identity,
                                  macs))
        done.add(k)
    return steps


def _step_macs(input_hw, factor_shapes, rank, strides, padding, lowering, order="auto"):
    """``[(step, MACs per example)]`` of the factored execution on an ``(H, W)`` input."""
    kernel = (math.prod(s[0] for s in factor_shapes), math.prod(s[1] for s in factor_shapes))
    h, w = input_hw
    per_step = padding == "same" and tuple(strides) == (1, 1)
    if padding == "same" and not per_step:
        h += sum(same_padding_amounts(h, kernel[0], strides[0]))
        w += sum(same_padding_amounts(w, kernel[1], strides[1]))
    out = []
    for step in factored_conv_plan(factor_shapes, strides, order,
                                   "same" if per_step else "valid", rank, lowering):
        h, w = h + sum(step.padding[0]), w + sum(step.padding[1])
        eh, ew = step.extent()
        h = (h - eh) // step.conv_strides[0] + 1
        w = (w - ew) // step.conv_strides[1] + 1
        out.append((step, h * w * step.macs_per_pixel))
        h = -(-h // step.slice_strides[0])
        w = -(-w // step.slice_strides[1])
    return out


def factored_conv_macs(input_hw, factor_shapes, rank=1, strides=(1, 1), padding="same",
                       order="auto", lowering="batch"):
    """MACs per example of the factored execution (`factored_conv_plan`) on an
    ``(H, W)`` input."""
    return sum(macs for _, macs in _step_macs(input_hw, factor_shapes, rank, strides, padding,
                                              lowering, order))


# The planner's cost weights per runtime, in MACs of a plain convolution: one MAC of a
# grouped or depthwise convolution, one element moved by a transpose; and the ``tile``
# ``(k, n)`` in which the runtime's convolution kernels (a GEMM per group) compute: the
# reduction length ``kh kw cin`` of a group rounded up to a multiple of ``k``, its output
# channels to a multiple of ``n`` (`tiled_macs`; depthwise convolutions with one output
# per channel are not tiled; with a channel multiplier > 1 they are: LiteRT runs a 3x3
# 28x28 depthwise of 16 channels x 2 in 39.4 us float32 / 49.2 us int8, 5.9x / 6.6x the
# time of 32 channels x 1 (the same MACs) and slower than a plain 16 -> 32 conv (28.4 /
# 10.0 us): `benchmarks/results/litert_depth_multiplier.txt`).
# Fitted by `python benchmarks/planner_calibration.py --runtime R` (relative least
# squares of time = a * plain MACs + g * grouped MACs + b * moved + c over the zoo
# students' layers, run factored both ways and materialised, MACs tiled by the tile that
# fits best; the weights are g / a and b / a); the runs, and the machine each ran on, are
# in benchmarks/results/planner_calibration_<runtime>.txt.
COST_WEIGHTS = {
    # AMD EPYC, AVX2, no AVX-512, 2 cores: Eigen kernels, batch 64
    "tensorflow": {"grouped_mac": 1.7, "moved": 90.9, "tile": (1, 1)},
    # the same machine: XLA CPU, batch 64
    "jax": {"grouped_mac": 1.5, "moved": 38.2, "tile": (1, 1)},
    # XNNPACK, 1 thread, batch 1 (float32, then int8 files), refitted with the tile and the
    # materialised kernels on an AMD EPYC with AVX-512 (VNNI), 2 cores (untiled, on the
    # AVX2 machine: 0.9 / 26.7 and 1.6 / 42.9)
    "litert": {"grouped_mac": 1.4, "moved": 30.6, "tile": (8, 16)},
    "litert_int8": {"grouped_mac": 2.0, "moved": 165.1, "tile": (16, 16)},
}


def cost_weights(runtime=None):
    """`COST_WEIGHTS` of ``runtime`` (default: Keras' backend; unknown: "tensorflow")."""
    return COST_WEIGHTS.get(runtime or keras.backend.backend(), COST_WEIGHTS["tensorflow"])


def tiled_macs(macs, reduction, outputs, tile=(1, 1)):
    """``macs`` of a convolution whose groups each reduce over ``reduction = kh kw cin``
    inputs into ``outputs`` channels, as a kernel working in ``tile = (k, n)`` blocks
    computes them: ``macs * ceil(reduction / k) k / reduction * ceil(outputs / n) n /
    outputs`` (a 3x3 group of 2 -> 3 channels on n = 16 costs 16/3 of its MACs)."""
    k, n = tile
    return (macs * (-(-reduction // k) * k) * (-(-outputs // n) * n)
            // (reduction * outputs))


def _step_tiled_macs(step, macs, tile):
    """``(MACs as computed, grouped?)`` of one step of a plan: tiled per group, except
    a depthwise convolution with one output per channel (one input channel per group,
    `grouped_conv2d`, and one output)."""
    kh, kw = step.kernel_size
    groups = step.groups if step.lowering == "channels" else 1
    group_in = step.conv_channels[0] // groups
    group_out = step.conv_channels[1] // groups
    depthwise = (groups > 1 and group_in == 1 and group_out == 1
                 and step.conv_strides[0] == step.conv_strides[1])
    if depthwise:
        return macs, True
    return tiled_macs(macs, kh * kw * group_in, group_out, tile), groups > 1


def factored_conv_cost_terms(input_hw, factor_shapes, rank=1, strides=(1, 1),
                             padding="same", lowering="batch", tile=(1, 1)):
    """``(plain MACs, grouped MACs, moved elements)`` per example of a factored execution:
    the MACs of plain and of grouped/depthwise convolutions (each step counted at the
    resolution it runs at, tiled by ``tile``: `tiled_macs`), and the elements its
    transposes move (approximated at the input size)."""
    plain = grouped = 0
    for step, macs in _step_macs(input_hw, factor_shapes, rank, strides, padding, lowering):
        computed, is_grouped = _step_tiled_macs(step, macs, tile)
        if is_grouped:
            grouped += computed
        else:
            plain += computed
    moved = transposed_per_pixel(factor_shapes, rank, "auto", strides, lowering)
    return plain, grouped, moved * input_hw[0] * input_hw[1]


def factored_conv_constants(factor_shapes, rank=1, strides=(1, 1), lowering="batch"):
    """Weights a frozen export of the factored execution stores: the factors themselves
    for "batch"; for "channels" the kernels as run (the factor repeated for each group of
    the grouped convolution, ``F (x) I_n`` for the other step)."""
    shapes = [tuple(int(v) for v in s) for s in factor_shapes]
    if lowering == "batch":
        return rank * sum(math.prod(s) for s in shapes)
    return sum(st.kernel_size[0] * st.kernel_size[1] * st.conv_channels[0]
               // max(st.groups, 1) * st.conv_channels[1]
               for st in factored_conv_plan(shapes, strides, "auto", "valid", rank, lowering))


def factored_conv_cost(input_hw, factor_shapes, rank=1, strides=(1, 1), padding="same",
                       lowering="batch", backend=None):
    """The planner's cost of a factored execution per example, in plain-convolution MACs:
    ``plain MACs + w_g grouped MACs + w_m moved elements``, MACs tiled, with the weights
    and tile ``COST_WEIGHTS[backend]`` (default: Keras' backend) measured on that
    runtime."""
    weights = cost_weights(backend)
    plain, grouped, moved = factored_conv_cost_terms(input_hw, factor_shapes, rank, strides,
                                                     padding, lowering, weights["tile"])
    return plain + weights["grouped_mac"] * grouped + weights["moved"] * moved


def dense_conv_cost(input_hw, kernel_size, in_channels, out_channels, strides=(1, 1),
                    padding="same", backend=None):
    """The planner's cost of one plain convolution per example (its MACs tiled by
    ``COST_WEIGHTS[backend]["tile"]``), in the units of `factored_conv_cost`."""
    macs = dense_conv_macs(input_hw, kernel_size, in_channels, out_channels, strides, padding)
    return tiled_macs(macs, kernel_size[0] * kernel_size[1] * in_channels, out_channels,
                      cost_weights(backend)["tile"])


def lowering_costs(input_hw, factor_shapes, rank=1, strides=(1, 1), padding="same",
                   runtime=None):
    """``{lowering: factored_conv_cost}`` on ``runtime`` for every lowering the factors
    allow ("channels" needs exactly two factors)."""
    allowed = LOWERINGS if len(factor_shapes) == 2 else ("batch",)
    return {lowering: factored_conv_cost(input_hw, factor_shapes, rank, strides, padding,
                                         lowering, runtime) for lowering in allowed}


def choose_lowering(input_hw, factor_shapes, rank=1, strides=(1, 1), padding="same",
                    runtime=None):
    """The cheaper lowering by `factored_conv_cost` on ``runtime`` (default: Keras'
    backend); "batch" for three or more factors and on ties."""
    costs = lowering_costs(input_hw, factor_shapes, rank, strides, padding, runtime)
    return min(costs, key=costs.get)  # LOWERINGS lists "batch" first: it wins ties


def dense_conv_macs(input_hw, kernel_size, in_channels, out_channels, strides=(1, 1),
                    padding="same"):
    """MACs per example of one plain convolution."""
    oh = conv_output_length(input_hw[0], kernel_size[0], strides[0], padding)
    ow = conv_output_length(input_hw[1], kernel_size[1], strides[1], padding)
    return oh * ow * kernel_size[0] * kernel_size[1] * in_channels * out_channels


def conv2d(x, kernel, strides=(1, 1), padding="valid"):
    """``keras.ops.conv`` (undilated, channels last), avoiding a TensorFlow miscomputation.

    TensorFlow's oneDNN Conv2D (TF 2.21 with oneDNN on) returns wrong values for one input
    channel, a batch of two or more, strides ``(1, s)`` with ``s > 1`` and an output one
    column wide (errors of the size of the outputs; Eigen, JAX and strides ``(s, 1)`` are
    right). Such a convolution, one whose output width may be 1 (or is not known before
    it runs), runs with height and width swapped, at strides ``(s, 1)``: the same result.
    """
    strides = tuple(int(v) for v in strides)
    if (keras.backend.backend() == "tensorflow" and x.shape[-1] == 1 and strides[0] == 1
            and strides[1] > 1):
        width = x.shape[2]
        if width is None or conv_output_length(int(width), int(kernel.shape[1]), strides[1],
                                               padding) == 1:
            swap = (0, 2, 1, 3)
            y = ops.conv(ops.transpose(x, swap), ops.transpose(kernel, (1, 0, 2, 3)),
                         strides=strides[::-1], padding=padding)
            return ops.transpose(y, swap)
    return ops.conv(x, kernel, strides=strides, padding=padding)


def dilated_conv2d(x, kernel, strides=(1, 1), dilation=(1, 1)):
    """"valid" convolution; on TensorFlow a native dilated Conv2D.

    ``keras.ops.conv`` on TensorFlow routes dilation through ``tf.nn.convolution``,
    which wraps the convolution in SpaceToBatchND/BatchToSpaceND: slower on CPU,
    and rejected by mobile GPU delegates once exported. ``tf.nn.conv2d`` with
    ``dilations`` runs (and exports) as one dilated CONV_2D.
    """
    if tuple(dilation) == (1, 1):
        return conv2d(x, kernel, strides, "valid")
    if keras.backend.backend() == "tensorflow":
        return _tf_native_dilated_conv2d(x, ops.cast(kernel, x.dtype), tuple(strides),
                                         tuple(dilation))
    return ops.conv(x, kernel, strides=strides, padding="valid", dilation_rate=dilation)


def _tf_native_dilated_conv2d(x, kernel, strides, dilation):
    """TensorFlow: forward as one native dilated Conv2D, gradients on every CPU.

    TensorFlow's Eigen CPU kernels (used wherever oneDNN is off: most AMD, older
    Intel and ARM CPUs, or ``TF_ENABLE_ONEDNN_OPTS=0``) have no dilated
    Conv2DBackpropInput / Conv2DBackpropFilter. The backward pass therefore
    differentiates the same convolution as ``tf.nn.convolution`` lowers it
    (SpaceToBatchND, undilated Conv2D, BatchToSpaceND), which has gradients on
    every device. One convolution, two lowerings: the forward op is what exports
    (a dilated CONV_2D in TFLite), the gradient is TensorFlow's own.
    """
    import tensorflow as tf

    strides4, dilations4 = [1, *strides, 1], [1, *dilation, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, strides=strides4, padding="VALID", dilations=dilations4)

        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                # Only used for its gradient; the forward result is not needed and
                # graph optimisation drops it under tf.function.
                z = tf.nn.convolution(x, kernel, strides=list(strides), padding="VALID",
                                      dilations=list(dilation))
            return tape.gradient(z, [x, kernel], output_gradients=dy)

        return y, grad

    return conv(x, kernel)


def _axis_perm(current, target):
    return [current.index(name) for name in target]


def _needs_transpose(current, target, sizes):
    """Whether reordering named axes ``current -> target`` moves data: not when only
    axes of size 1 (``sizes``: name -> static size) change places."""
    return ([a for a in current if sizes.get(a) != 1]
            != [a for a in target if sizes.get(a) != 1])


def _move_axes(t, current, target, sizes):
    """``t`` with its named axes reordered from ``current`` to ``target``.

    ``sizes`` maps an axis name to its static size (absent: dynamic). When only axes
    of size 1 change places the data order is unchanged, and a reshape (free) stands
    in for the transpose (a full pass over the tensor, a TRANSPOSE op in TFLite).
    """
    perm = _axis_perm(current, target)
    if perm == list(range(len(perm))):
        return t
    if not _needs_transpose(current, target, sizes):
        shape = ops.shape(t)
        return ops.reshape(t, [shape[i] for i in perm])
    return ops.transpose(t, perm)


def _batch_layouts(m, order):
    """The batch lowering's axis layouts: per step, ``(layout its convolution needs,
    layout of its result)``. Axes: "N" batch, "S" pixels, "R" rank terms, ``0..m-1``
    the channel axes; the input is ``["N", "S", 0, ..., m-1]`` and so is the output."""
    layouts = []
    for i, a in enumerate(order):
        others = [k for k in range(m) if k != a]
        if i == 0:
            layouts.append((["N"] + others + ["S", a], ["N"] + others + ["S", "R", a]))
        elif i == m - 1:
            layouts.append((["N"] + others + ["S", "R", a], ["N"] + others + ["S", a]))
        else:
            layouts.append((["R", "N"] + others + ["S", a],) * 2)
    return layouts


def transposed_per_pixel(factor_shapes, rank=1, order="auto", strides=(1, 1),
                         lowering="batch"):
    """Elements per pixel that the plan's transposes move (0 for lowering="channels")."""
    shapes = [tuple(int(v) for v in s) for s in factor_shapes]
    if lowering == "channels":
        return 0
    m = len(shapes)
    order = step_order(shapes, strides, order, lowering, rank)
    sizes = [s[2] for s in shapes]
    current, moved = ["N", "S"] + list(range(m)), 0
    for a, (needed, result) in zip(order, _batch_layouts(m, order)):
        axes = dict(enumerate(sizes), R=rank)
        if _needs_transpose(current, needed, axes):
            moved += math.prod(sizes) * (rank if "R" in current else 1)
        sizes[a] = shapes[a][3]
        current = result
    if _needs_transpose(current, ["N", "S"] + list(range(m)), dict(enumerate(sizes), R=rank)):
        moved += math.prod(sizes)
    return moved


def grouped_conv2d(x, kernel, strides=(1, 1), padding="valid"):
    """Grouped convolution: ``x`` (N, H, W, G * a), ``kernel`` (kh, kw, a, G * b); group
    ``g`` convolves channels ``[g a, (g + 1) a)`` with ``kernel[..., g b:(g + 1) b]``.

    One input channel per group runs as a depthwise convolution (DEPTHWISE_CONV_2D in
    TFLite, with fast int8 kernels). Otherwise, on TensorFlow the forward op is one
    native (grouped) Conv2D, which exports as one CONV_2D. TensorFlow's CPU kernels have
    no gradient for it; XLA's (Keras' route for grouped convolutions) runs 26-180x slower
    on CPU than `_grouped_conv_gradient`, which uses the dense convolution gradients
    (`benchmarks/grouped_conv_gradient.py`).
    """
    kh, kw, group_in, out = (int(v) for v in kernel.shape)
    groups = int(x.shape[-1]) // group_in
    if group_in == 1 and groups > 1 and strides[0] == strides[1]:  # a depthwise convolution
        kernel = ops.reshape(kernel, (kh, kw, groups, out // groups))
        return ops.depthwise_conv(x, kernel, strides=strides, padding=padding)
    if keras.backend.backend() == "tensorflow" and groups > 1:
        return _tf_grouped_conv2d(x, ops.cast(kernel, x.dtype), tuple(strides), padding)
    return conv2d(x, kernel, strides, padding)


def _block_diagonal_kernel(kernel, groups):
    """``(kh, kw, a, G b)`` grouped kernel -> the dense ``(kh, kw, G a, G b)`` kernel that is
    block-diagonal over the groups: ``K[:, :, g a + i, g' b + j] = [g = g'] kernel[:, :, i, g b + j]``."""
    kh, kw, a, out = (int(v) for v in kernel.shape)
    b = out // groups
    blocks = ops.transpose(ops.reshape(kernel, (kh, kw, a, groups, b)), (0, 1, 3, 2, 4))
    eye = ops.reshape(ops.eye(groups, dtype=kernel.dtype), (1, 1, groups, 1, groups, 1))
    dense = ops.reshape(blocks, (kh, kw, groups, a, 1, b)) * eye
    return ops.reshape(dense, (kh, kw, groups * a, groups * b))


# `_grouped_conv_gradient`: the block-diagonal route while G a is at most this.
_BLOCK_DIAGONAL_MAX_CHANNELS = 64


def _grouped_conv_gradient(x, kernel, dy, strides4, padding):
    """Gradients of a grouped ``tf.nn.conv2d`` w.r.t. ``x`` and ``kernel``, from TensorFlow's
    own (oneDNN or Eigen) dense convolution gradients: one convolution with the
    block-diagonal kernel while the dense input is small (G a <= 64: G times the MACs, one
    op), else one convolution per group."""
    import tensorflow as tf

    group_in = int(kernel.shape[-2])
    groups = int(x.shape[-1]) // group_in
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        if groups * group_in <= _BLOCK_DIAGONAL_MAX_CHANNELS:
            z = tf.nn.conv2d(x, _block_diagonal_kernel(kernel, groups), strides=strides4,
                             padding=padding)
        else:
            z = tf.concat([tf.nn.conv2d(xg, kg, strides=strides4, padding=padding)
                           for xg, kg in zip(tf.split(x, groups, axis=-1),
                                             tf.split(kernel, groups, axis=-1))], axis=-1)
    return tape.gradient(z, [x, kernel], output_gradients=dy)


def _tf_grouped_conv2d(x, kernel, strides, padding):
    import tensorflow as tf

    strides4, pad = [1, *strides, 1], padding.upper()

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            return _grouped_conv_gradient(x, kernel, dy, strides4, pad)

        return tf.nn.conv2d(x, kernel, strides=strides4, padding=pad), grad

    return conv(x, kernel)


def _conv_step(x, kernel, step, padding_mode="zeros"):
    """One step of the cascade: the step's padding, dilated "valid" conv (or one "same"
    conv where that is the same), then the step's slicing. A kernel with fewer input
    channels than ``x`` runs as a grouped convolution (dilation 1)."""
    grouped = int(kernel.shape[-2]) != int(x.shape[-1])
    if step.same_conv and padding_mode == "zeros" and step.dilation == (1, 1):
        if grouped:
            x = grouped_conv2d(x, kernel, step.conv_strides, "same")
        else:
            x = conv2d(x, kernel, step.conv_strides, "same")
    else:
        if step.padding != ((0, 0), (0, 0)):
            widths = [(0, 0), step.padding[0], step.padding[1], (0, 0)]
            x = (ops.pad(x, widths) if padding_mode == "zeros"
                 else ops.pad(x, widths, mode=padding_mode))
        if grouped:
            x = grouped_conv2d(x, kernel, step.conv_strides)
        else:
            x = dilated_conv2d(x, kernel, step.conv_strides, step.dilation)
    if step.slice_strides != (1, 1):
        x = x[:, :: step.slice_strides[0], :: step.slice_strides[1], :]
    return x


def _channels_conv2d(x, factors, plan, padding_mode):
    """Two factors without moving data (`factored_conv_plan`, lowering="channels"):
    channels stay ``(c_0, c_1)`` (slow, fast). The fast-axis step is one grouped
    convolution with the factor shared by its groups; the slow-axis step one convolution
    with the kernel ``sum_r F_0[r] (x) I_n`` laid out for the channels it meets:
    ``(c_0, j) -> (o_0, r, j)`` when it runs first, ``(c_0, r, j) -> (o_0, j)`` last."""
    rank = int(factors[0].shape[0])
    for i, step in enumerate(plan):
        f = factors[step.axis]
        kh, kw, cin, cout = step.kernel_size + (step.in_channels, step.out_channels)
        first = i == 0
        if step.identity == 1 and step.axis == len(factors) - 1:
            if first:  # (rank, kh, kw, in, out) -> (kh, kw, in, rank * out)
                kernel = ops.reshape(ops.transpose(f, (1, 2, 3, 0, 4)),
                                     (kh, kw, cin, rank * cout))
            else:  # -> (kh, kw, rank * in, out)
                kernel = ops.reshape(ops.transpose(f, (1, 2, 0, 3, 4)),
                                     (kh, kw, rank * cin, cout))
            if step.groups > 1:  # (a concatenation folds into a constant in TFLite; a TILE may not)
                kernel = ops.concatenate([kernel] * step.groups, axis=-1)
        else:
            n = step.identity
            eye = ops.eye(n, dtype=f.dtype)
            # Broadcast products (an outer-product einsum does not convert to TFLite).
            if first:  # (c_0, j) -> (o_0, r, j): K[h, w, c, j, o, r, k] = F[r, h, w, c, o] I[j, k]
                kernel = (ops.reshape(ops.transpose(f, (1, 2, 3, 4, 0)),
                                      (kh, kw, cin, 1, cout, rank, 1))
                          * ops.reshape(eye, (1, 1, 1, n, 1, 1, n)))
                kernel = ops.reshape(kernel, (kh, kw, cin * n, cout * rank * n))
            else:  # (c_0, r, j) -> (o_0, j): K[h, w, c, r, j, o, k] = F[r, h, w, c, o] I[j, k]
                kernel = (ops.reshape(ops.transpose(f, (1, 2, 3, 0, 4)),
                                      (kh, kw, cin, rank, 1, cout, 1))
                          * ops.reshape(eye, (1, 1, 1, 1, n, 1, n)))
                kernel = ops.reshape(kernel, (kh, kw, cin * rank * n, cout * n))
        x = _conv_step(x, kernel, step, padding_mode)
    return x


def check_factors(x, factors, x_ndim, factor_ndim, function):
    """ValueError naming the problem unless ``x`` has ``x_ndim`` axes (any when `None`)
    and ``factors`` is a non-empty sequence of ``factor_ndim``-d tensors
    ``(rank, ..., in_k, out_k)`` of one rank whose ``prod in_k`` is ``x``'s last axis (where
    known)."""
    if x_ndim is not None and len(x.shape) != x_ndim:
        raise ValueError(f"{function} takes an input with {x_ndim} axes. Received: input of "
                         f"shape {tuple(x.shape)}")
    if not factors or any(len(f.shape) != factor_ndim for f in factors):
        raise ValueError(f"{function} takes a non-empty list of {factor_ndim}-d factors "
                         f"(rank first). Received shapes: "
                         f"{[tuple(f.shape) for f in factors]}")
    ranks = {int(f.shape[0]) for f in factors}
    if len(ranks) != 1:
        raise ValueError(f"{function}: every factor needs the same rank (first axis). "
                         f"Received shapes: {[tuple(f.shape) for f in factors]}")
    channels = math.prod(int(f.shape[-2]) for f in factors)
    if x.shape[-1] is not None and int(x.shape[-1]) != channels:
        raise ValueError(f"{function}: the input has {x.shape[-1]} channels (last axis); the "
                         f"factors take prod in_k = {channels}. Received factor shapes: "
                         f"{[tuple(f.shape) for f in factors]}")


def factored_conv2d(x, factors, strides=(1, 1), order="auto", padding="valid",
                    padding_mode="zeros", lowering="batch"):
    """Factored convolution, all rank terms: "valid" (of an input padded as needed) or,
    at stride 1, "same" with the padding applied step by step (`factored_conv_plan`).

    Args:
        x: (N, H, W, prod in_k) tensor.
        factors: m >= 2 tensors ``(rank, kh_k, kw_k, in_k, out_k)``, outermost first.
        strides: ``(sh, sw)`` of the equivalent plain convolution.
        order: the factors' execution order (see `step_order`).
        padding, padding_mode: "valid", or "same" (stride 1) with "zeros", "reflect" or
            "symmetric" values.
        lowering: "batch" or "channels" (two factors), see `factored_conv_plan`.

    Returns:
        (N, H', W', prod out_k):
        ``conv(x, sum_r kron(F_0[r], ..., F_{m-1}[r]), strides, padding)``.

    The rank terms share two of their convolutions: the first step runs once
    with the terms' kernels concatenated along its output channels
    (``in -> rank * out``), and the last step once with them stacked along its
    input channels (``rank * in -> out``), which also sums the terms. Only the steps
    in between (three or more factors) run once per term. The MACs are those of
    ``rank`` separate cascades; the convolutions are fewer and wider.
    """
    check_factors(x, factors, 4, 5, "factored_conv2d")
    shapes = [tuple(int(v) for v in f.shape[1:]) for f in factors]
    rank = int(factors[0].shape[0])
    m = len(shapes)
    plan = factored_conv_plan(shapes, strides, order, padding, rank, lowering)
    if lowering == "channels":
        return _channels_conv2d(x, factors, plan, padding_mode)
    sizes = [s[2] for s in shapes]  # current size of each channel axis
    batch = ops.shape(x)[0]
    h, w = ops.shape(x)[1], ops.shape(x)[2]
    t = ops.reshape(x, [batch, h * w] + sizes)
    current = ["N", "S"] + list(range(m))
    layouts = _batch_layouts(m, [step.axis for step in plan])
    for i, (step, (needed, result)) in enumerate(zip(plan, layouts)):
        a = step.axis
        first, last = i == 0, i == len(plan) - 1
        others = [k for k in range(m) if k != a]
        f = factors[a]
        kh, kw, cin, cout = shapes[a]
        t = _move_axes(t, current, needed, dict(enumerate(sizes), R=rank))
        if first:
            # (rank, kh, kw, in, out) -> (kh, kw, in, rank * out)
            kernel = ops.reshape(ops.transpose(f, (1, 2, 3, 0, 4)), (kh, kw, cin, rank * cout))
            t = _conv_step(ops.reshape(t, [-1, h, w, cin]), kernel, step, padding_mode)
        elif last:
            # (rank, kh, kw, in, out) -> (kh, kw, rank * in, out)
            kernel = ops.reshape(ops.transpose(f, (1, 2, 0, 3, 4)), (kh, kw, rank * cin, cout))
            t = _conv_step(ops.reshape(t, [-1, h, w, rank * cin]), kernel, step, padding_mode)
        else:
            # One convolution per rank term; the terms stay first: (rank * N * G, ...).
            terms = ops.reshape(t, [rank, -1, h, w, cin])
            t = ops.concatenate([_conv_step(terms[r], f[r], step, padding_mode)
                                 for r in range(rank)], axis=0)
        sizes[a] = cout
        h, w = ops.shape(t)[1], ops.shape(t)[2]
        lead = [rank, batch] if result[0] == "R" else [batch]
        tail = [h * w, rank, cout] if "R" in result[-2:] else [h * w, cout]
        t = ops.reshape(t, lead + [sizes[k] for k in others] + tail)
        current = result
    t = _move_axes(t, current, ["N", "S"] + list(range(m)), dict(enumerate(sizes), R=rank))
    return ops.reshape(t, [batch, h, w, math.prod(sizes)])


def kronecker_conv2d(x, factors, strides=(1, 1), padding="same", padding_mode="zeros",
                     order="auto", lowering="batch"):
    """Factored Kronecker convolution: ``conv(x, sum_r kron(F_0[r], ..., F_{m-1}[r]))``.

    Args:
        x: (N, H, W, C_in) input, ``C_in = prod in_k``.
        factors: m >= 2 tensors of shape ``(rank, kh_k, kw_k, in_k, out_k)``.
        strides: int or ``(sh, sw)``.
        padding: "same" or "valid", with Keras/TF semantics for the full kernel.
        padding_mode: "zeros", "reflect" or "symmetric" for "same" padding.
        order: the factors' execution order (see `step_order`; default the cheapest).
        lowering: "batch" or "channels" (two factors), see `factored_conv_plan`.

    Returns:
        (N, H', W', prod out_k), never forming the full kernel.
    """
    check_factors(x, factors, 4, 5, "kronecker_conv2d")
    strides = positive_pair(strides, "strides")
    padding, padding_mode = normalize_padding(padding, padding_mode)
    extent = (math.prod(int(f.shape[1]) for f in factors),
              math.prod(int(f.shape[2]) for f in factors))
    if padding == "same" and strides == (1, 1):  # padded step by step, where it is needed
        return factored_conv2d(x, factors, strides, order, "same", padding_mode, lowering)
    x = pad_input(x, extent, strides, padding, padding_mode)
    return factored_conv2d(x, factors, strides, order, lowering=lowering)


def kronecker_matmul_order(ins, outs):
    """``(order, macs)``: the order in which `kronecker_matmul` contracts the factors
    (factor indices, first contracted first; outermost is 0) and its MACs per input
    vector and rank term, the least over all orders.

    Contracting factor ``k`` while the other axes have sizes ``d_l`` (``out_l`` once
    contracted, else ``in_l``) costs ``in_k * out_k * prod_{l != k} d_l``. Ties keep
    innermost first. E.g. ``(in, 1) (x) (1, out)`` (a rank-r product ``U V``) costs
    ``in + out`` outermost first, ``2 in out`` innermost first.
    """
    return _kronecker_matmul_order(tuple(int(d) for d in ins), tuple(int(d) for d in outs))


@functools.lru_cache(maxsize=256)
def _kronecker_matmul_order(ins, outs):
    # A step's cost depends only on which factors were contracted before it, so the
    # least cost to finish from each such set (2^m of them) decides the order; among
    # equal orders the first in innermost-first lexicographic order is taken.
    m = len(ins)

    def step_cost(done, k):
        sizes = [outs[l] if done >> l & 1 else ins[l] for l in range(m)]
        return math.prod(sizes[:k] + sizes[k + 1:]) * ins[k] * outs[k]

    full = (1 << m) - 1
    to_finish = {full: 0}
    for done in sorted(range(full), key=lambda s: -bin(s).count("1")):
        to_finish[done] = min(step_cost(done, k) + to_finish[done | 1 << k]
                              for k in range(m) if not done >> k & 1)
    order, done = [], 0
    while done != full:
        k = next(k for k in reversed(range(m)) if not done >> k & 1
                 and step_cost(done, k) + to_finish[done | 1 << k] == to_finish[done])
        order.append(k)
        done |= 1 << k
    return tuple(order), to_finish[0]


def kronecker_matmul_macs(factor_shapes, rank=1):
    """MACs per input vector of `kronecker_matmul` with factors of shapes
    ``(in_k, out_k)`` (outermost first) and ``rank`` terms."""
    return rank * kronecker_matmul_order([s[0] for s in factor_shapes],
                                         [s[1] for s in factor_shapes])[1]


# Axis letters of the factors' inputs and outputs; "Z" (batch) and "R" (rank) are apart.
_EINSUM_AXES = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQSTUVWXY"
# The order search visits every subset of the factors (2^16 for 16, about 4 s once).
MAX_MATMUL_FACTORS = 16


def kronecker_matmul(x, factors):
    """``x @ sum_r kron(F_0[r], ..., F_{m-1}[r])`` without forming the matrix.

    Args:
        x: (..., prod in_k) tensor.
        factors: m >= 2 tensors of shape ``(rank, in_k, out_k)``, outermost first.

    Returns:
        (..., prod out_k). Runs as m small contractions over the reshaped input
        ``(B, in_0, ..., in_{m-1})``, in the order of least MACs
        (`kronecker_matmul_order`), the rank axis shared by all of them.
    """
    check_factors(x, factors, None, 3, "kronecker_matmul")
    m = len(factors)
    ins = [int(f.shape[1]) for f in factors]
    outs = [int(f.shape[2]) for f in factors]
    if m > MAX_MATMUL_FACTORS:
        raise ValueError(f"kronecker_matmul takes at most {MAX_MATMUL_FACTORS} factors. "
                         f"Received: {m}")
    order, _ = kronecker_matmul_order(ins, outs)
    lead = ops.shape(x)[:-1]
    t = ops.reshape(x, [-1] + ins)
    letters = _EINSUM_AXES
    in_l, out_l = letters[:m], letters[m:2 * m]
    axes = list(in_l)
    # the rank axis 'R' appears at the first step and is summed at the last
    for step, k in enumerate(order):
        src = "Z" + ("R" if step > 0 else "") + "".join(axes)
        axes[k] = out_l[k]
        dst = "Z" + ("R" if step < m - 1 else "") + "".join(axes)
        t = ops.einsum(f"{src},R{in_l[k]}{out_l[k]}->{dst}", t, factors[k])
    return ops.reshape(t, list(lead) + [math.prod(outs)])
