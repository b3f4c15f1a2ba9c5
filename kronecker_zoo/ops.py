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
batch. At stride 1 the factors may run in any order and `step_order` picks the
cheapest (for ``(k x 1, in -> 1) (x) (1 x k, 1 -> out)``, low-rank spatial SVD, the
outer factor first: ``k (in + out)`` MACs per pixel instead of ``2 k in out``); with
a stride, innermost first. With the input padded once
(exactly as a plain convolution with ``W`` would pad it) and every step "valid",
the cascade equals the plain convolution everywhere, borders included.
"""

import dataclasses
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

    def extent(self):
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation))


def _step_macs_per_pixel(shapes, order):
    """MACs per output pixel of the cascade running the factors in ``order`` (borders
    ignored): step ``k`` costs ``kh kw in_k out_k`` times its groups, the product of the
    output sizes of the factors already run and the input sizes of those still to run."""
    total, done = 0, set()
    for k in order:
        groups = math.prod(shapes[j][3] if j in done else shapes[j][2]
                           for j in range(len(shapes)) if j != k)
        total += shapes[k][0] * shapes[k][1] * shapes[k][2] * shapes[k][3] * groups
        done.add(k)
    return total


def step_order(factor_shapes, strides=(1, 1), order="auto"):
    """The order in which the cascade runs the factors (indices, outermost = 0).

    At stride 1 every order is exact (the spatial steps are "valid" convolutions of
    the input padded once, so they commute; each contracts its own channel axis);
    ``"auto"`` picks the one with the fewest MACs (innermost first on ties). With a
    stride the cascade runs innermost first (the order whose stride placement keeps
    it exact). ``order`` may also be a permutation of ``range(m)`` (stride 1 only).
    """
    shapes = [tuple(int(v) for v in s) for s in factor_shapes]
    m = len(shapes)
    innermost_first = tuple(range(m - 1, -1, -1))
    strided = tuple(strides) != (1, 1)
    if isinstance(order, str) and order == "auto":
        if strided:
            return innermost_first
        return min(itertools.permutations(innermost_first),
                   key=lambda o: _step_macs_per_pixel(shapes, o))
    order = tuple(int(k) for k in order)
    if sorted(order) != list(range(m)):
        raise ValueError(f"`order` must be 'auto' or a permutation of {list(range(m))}. "
                         f"Received: order={order!r}")
    if strided and order != innermost_first:
        raise ValueError(f"With strides {tuple(strides)} the cascade runs innermost first "
                         f"{innermost_first}. Received: order={order!r}")
    return order


def factored_conv_plan(factor_shapes, strides=(1, 1), order="auto", padding="valid"):
    """The cascade that executes ``conv(x, F_0 (x) ... (x) F_{m-1}, strides)``.

    Args:
        factor_shapes: m >= 2 shapes ``(kh, kw, in, out)``, outermost first.
        strides: ``(sh, sw)`` of the equivalent plain convolution.
        order: see `step_order` (default: the cheapest exact order).
        padding: "valid" (the input is padded already, if at all) or, at stride 1 only,
            "same": each axis is padded just before the first step whose kernel reaches
            along it (a step of extent 1 along an axis acts on each row or column alone,
            so padding after it is exact, for zeros as for reflections).

    Returns:
        A list of ``FactoredStep`` in execution order. Factor ``k`` always convolves at
        dilation ``d_k = prod_{l > k} (kh_l, kw_l)``. The stride is applied as early as
        the dilations allow: right after step ``k`` when every later step's dilation
        is a multiple of the stride (those dilations are then divided by it), else on
        the final output.
    """
    shapes = [tuple(int(v) for v in s) for s in factor_shapes]
    m = len(shapes)
    sh, sw = strides
    order = step_order(shapes, strides, order)
    dil = []
    for k in range(m):
        dil.append((math.prod(s[0] for s in shapes[k + 1:]),
                    math.prod(s[1] for s in shapes[k + 1:])))
    # Earliest step (in execution order m-1, ..., 0) after which striding is exact.
    stride_after = 0
    for k in range(m - 1, 0, -1):
        if dil[k - 1][0] % sh == 0 and dil[k - 1][1] % sw == 0:
            stride_after = k
            break
    if padding == "same" and (sh, sw) != (1, 1):
        raise ValueError("A strided cascade pads its input once (`pad_input`); "
                         "factored_conv_plan(padding='same') needs strides (1, 1).")
    total = (math.prod(s[0] for s in shapes), math.prod(s[1] for s in shapes))
    pending = [padding == "same" and e > 1 for e in total]
    steps, done = [], set()
    for k in order:
        kh, kw, cin, cout = shapes[k]
        d = dil[k]
        if k < stride_after:
            d = (d[0] // sh, d[1] // sw)
        d = (d[0] if kh > 1 else 1, d[1] if kw > 1 else 1)  # no dilation along a 1-tap axis
        groups = math.prod(shapes[j][3] if j in done else shapes[j][2]
                           for j in range(m) if j != k)
        conv_s, slice_s = (1, 1), (1, 1)
        if k == stride_after and (sh, sw) != (1, 1):
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
                                  tuple(pads), same_conv))
        done.add(k)
    return steps


def factored_conv_macs(input_hw, factor_shapes, rank=1, strides=(1, 1), padding="same",
                       order="auto"):
    """MACs per example of the factored execution (the plan of `step_order`) on an
    ``(H, W)`` input."""
    kernel = (math.prod(s[0] for s in factor_shapes), math.prod(s[1] for s in factor_shapes))
    h, w = input_hw
    per_step = padding == "same" and tuple(strides) == (1, 1)
    if padding == "same" and not per_step:
        h += sum(same_padding_amounts(h, kernel[0], strides[0]))
        w += sum(same_padding_amounts(w, kernel[1], strides[1]))
    total = 0
    for step in factored_conv_plan(factor_shapes, strides, order,
                                   "same" if per_step else "valid"):
        h, w = h + sum(step.padding[0]), w + sum(step.padding[1])
        eh, ew = step.extent()
        h = (h - eh) // step.conv_strides[0] + 1
        w = (w - ew) // step.conv_strides[1] + 1
        total += step.groups * h * w * step.kernel_size[0] * step.kernel_size[1] * (
            step.in_channels * step.out_channels)
        h = -(-h // step.slice_strides[0])
        w = -(-w // step.slice_strides[1])
    return rank * total


def dense_conv_macs(input_hw, kernel_size, in_channels, out_channels, strides=(1, 1),
                    padding="same"):
    """MACs per example of one plain convolution."""
    oh = conv_output_length(input_hw[0], kernel_size[0], strides[0], padding)
    ow = conv_output_length(input_hw[1], kernel_size[1], strides[1], padding)
    return oh * ow * kernel_size[0] * kernel_size[1] * in_channels * out_channels


def dilated_conv2d(x, kernel, strides=(1, 1), dilation=(1, 1)):
    """"valid" convolution; on TensorFlow a native dilated Conv2D.

    ``keras.ops.conv`` on TensorFlow routes dilation through ``tf.nn.convolution``,
    which wraps the convolution in SpaceToBatchND/BatchToSpaceND: slower on CPU,
    and rejected by mobile GPU delegates once exported. ``tf.nn.conv2d`` with
    ``dilations`` runs (and exports) as one dilated CONV_2D.
    """
    if keras.backend.backend() == "tensorflow" and tuple(dilation) != (1, 1):
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


def _move_axes(t, current, target, sizes):
    """``t`` with its named axes reordered from ``current`` to ``target``.

    ``sizes`` maps an axis name to its static size (absent: dynamic). When only axes
    of size 1 change places the data order is unchanged, and a reshape (free) stands
    in for the transpose (a full pass over the tensor, a TRANSPOSE op in TFLite).
    """
    perm = _axis_perm(current, target)
    if perm == list(range(len(perm))):
        return t
    if [a for a in current if sizes.get(a) != 1] == [a for a in target if sizes.get(a) != 1]:
        shape = ops.shape(t)
        return ops.reshape(t, [shape[i] for i in perm])
    return ops.transpose(t, perm)


def _conv_step(x, kernel, step, padding_mode="zeros"):
    """One step of the cascade: the step's padding, dilated "valid" conv (or one "same"
    conv where that is the same), then the step's slicing."""
    if step.same_conv and padding_mode == "zeros" and step.dilation == (1, 1):
        x = ops.conv(x, kernel, strides=step.conv_strides, padding="same")
    else:
        if step.padding != ((0, 0), (0, 0)):
            widths = [(0, 0), step.padding[0], step.padding[1], (0, 0)]
            x = (ops.pad(x, widths) if padding_mode == "zeros"
                 else ops.pad(x, widths, mode=padding_mode))
        x = dilated_conv2d(x, kernel, step.conv_strides, step.dilation)
    if step.slice_strides != (1, 1):
        x = x[:, :: step.slice_strides[0], :: step.slice_strides[1], :]
    return x


def factored_conv2d(x, factors, strides=(1, 1), order="auto", padding="valid",
                    padding_mode="zeros"):
    """Factored convolution, all rank terms: "valid" (of an input padded as needed) or,
    at stride 1, "same" with the padding applied step by step (`factored_conv_plan`).

    Args:
        x: (N, H, W, prod in_k) tensor.
        factors: m >= 2 tensors ``(rank, kh_k, kw_k, in_k, out_k)``, outermost first.
        strides: ``(sh, sw)`` of the equivalent plain convolution.
        order: the factors' execution order (see `step_order`).
        padding, padding_mode: "valid", or "same" (stride 1) with "zeros", "reflect" or
            "symmetric" values.

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
    shapes = [tuple(int(v) for v in f.shape[1:]) for f in factors]
    rank = int(factors[0].shape[0])
    m = len(shapes)
    plan = factored_conv_plan(shapes, strides, order, padding)
    sizes = [s[2] for s in shapes]  # current size of each channel axis
    batch = ops.shape(x)[0]
    h, w = ops.shape(x)[1], ops.shape(x)[2]
    t = ops.reshape(x, [batch, h * w] + sizes)
    current = ["N", "S"] + list(range(m))
    for i, step in enumerate(plan):
        a = step.axis
        first, last = i == 0, i == len(plan) - 1
        others = [k for k in range(m) if k != a]
        f = factors[a]
        kh, kw, cin, cout = shapes[a]
        if first:
            # (rank, kh, kw, in, out) -> (kh, kw, in, rank * out)
            kernel = ops.reshape(ops.transpose(f, (1, 2, 3, 0, 4)), (kh, kw, cin, rank * cout))
            target = ["N"] + others + ["S", a]
        elif last:
            # (rank, kh, kw, in, out) -> (kh, kw, rank * in, out)
            kernel = ops.reshape(ops.transpose(f, (1, 2, 0, 3, 4)), (kh, kw, rank * cin, cout))
            target = ["N"] + others + ["S", "R", a]
        else:
            target = ["R", "N"] + others + ["S", a]
        t = _move_axes(t, current, target, dict(enumerate(sizes), R=rank))
        if first or last:
            t = _conv_step(ops.reshape(t, [-1, h, w, (1 if first else rank) * cin]),
                           kernel, step, padding_mode)
        else:
            # One convolution per rank term; the terms stay first: (rank * N * G, ...).
            terms = ops.reshape(t, [rank, -1, h, w, cin])
            t = ops.concatenate([_conv_step(terms[r], f[r], step, padding_mode)
                                 for r in range(rank)], axis=0)
        sizes[a] = cout
        h, w = ops.shape(t)[1], ops.shape(t)[2]
        if first:
            current = ["N"] + others + ["S", "R", a]
            t = ops.reshape(t, [batch] + [sizes[k] for k in others] + [h * w, rank, cout])
        elif last:
            current = ["N"] + others + ["S", a]
            t = ops.reshape(t, [batch] + [sizes[k] for k in others] + [h * w, cout])
        else:
            current = target
            t = ops.reshape(t, [rank, batch] + [sizes[k] for k in others] + [h * w, cout])
    t = _move_axes(t, current, ["N", "S"] + list(range(m)), dict(enumerate(sizes), R=rank))
    return ops.reshape(t, [batch, h, w, math.prod(sizes)])


def kronecker_conv2d(x, factors, strides=(1, 1), padding="same", padding_mode="zeros",
                     order="auto"):
    """Factored Kronecker convolution: ``conv(x, sum_r kron(F_0[r], ..., F_{m-1}[r]))``.

    Args:
        x: (N, H, W, C_in) input, ``C_in = prod in_k``.
        factors: m >= 2 tensors of shape ``(rank, kh_k, kw_k, in_k, out_k)``.
        strides: int or ``(sh, sw)``.
        padding: "same" or "valid", with Keras/TF semantics for the full kernel.
        padding_mode: "zeros", "reflect" or "symmetric" for "same" padding.
        order: the factors' execution order (see `step_order`; default the cheapest).

    Returns:
        (N, H', W', prod out_k), never forming the full kernel.
    """
    strides = positive_pair(strides, "strides")
    padding, padding_mode = normalize_padding(padding, padding_mode)
    extent = (math.prod(int(f.shape[1]) for f in factors),
              math.prod(int(f.shape[2]) for f in factors))
    if padding == "same" and strides == (1, 1):  # padded step by step, where it is needed
        return factored_conv2d(x, factors, strides, order, "same", padding_mode)
    x = pad_input(x, extent, strides, padding, padding_mode)
    return factored_conv2d(x, factors, strides, order)


def kronecker_matmul(x, factors):
    """``x @ sum_r kron(F_0[r], ..., F_{m-1}[r])`` without forming the matrix.

    Args:
        x: (..., prod in_k) tensor.
        factors: m >= 2 tensors of shape ``(rank, in_k, out_k)``, outermost first.

    Returns:
        (..., prod out_k). Runs as m small contractions over the reshaped input
        ``(B, in_0, ..., in_{m-1})``, the rank axis shared by all of them.
    """
    m = len(factors)
    ins = [int(f.shape[1]) for f in factors]
    outs = [int(f.shape[2]) for f in factors]
    lead = ops.shape(x)[:-1]
    t = ops.reshape(x, [-1] + ins)
    letters = "abcdefghijklmnopqrstuvwxyz"
    in_l, out_l = letters[:m], letters[m:2 * m]
    axes = list(in_l)
    # contract the innermost axis first; the rank axis 'R' appears at the first step
    for k in range(m - 1, -1, -1):
        src = "Z" + ("R" if k < m - 1 else "") + "".join(axes)
        axes[k] = out_l[k]
        dst = "Z" + ("R" if k > 0 else "") + "".join(axes)
        t = ops.einsum(f"{src},R{in_l[k]}{out_l[k]}->{dst}", t, factors[k])
    return ops.reshape(t, list(lead) + [math.prod(outs)])
