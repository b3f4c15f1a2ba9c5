"""Pure kernel math: Kronecker products, dilation, cascades, receptive fields.

No Keras state lives here. Every function accepts NumPy arrays (and then returns
NumPy arrays, in the input's dtype) or backend tensors (and then computes with
``keras.ops``, so it can sit inside a layer's ``call`` and be differentiated).

Conventions (as in Keras): a convolution kernel has shape ``(kh, kw, in, out)``
and a convolution is a cross-correlation,
``y[p, o] = sum_{u, c} x[p + d * u, c] * K[u, c, o]`` at dilation ``d``.
A 2-D ``(kh, kw)`` kernel is the single-channel case.

The seed identity these functions make checkable: ``a x a`` kernels
``K_0, ..., K_L`` applied as a cascade with dilations ``1, a, ..., a**L``
(``K_0`` first) equal one convolution with ``kron(K_L, ..., K_0)``::

    collapse([K0, K1, K2], [1, a, a * a]) == kron(K2, K1, K0)
"""

import math

import numpy as np

from kronecker_zoo.validation import positive_pair


def _is_numpy(*arrays):
    return all(isinstance(a, (np.ndarray, np.generic, list, tuple)) for a in arrays)


def _xp(*arrays):
    """The array namespace to compute with: NumPy for NumPy input, else keras.ops."""
    if _is_numpy(*arrays):
        return np
    import keras

    return keras.ops


def _shape(array):
    return tuple(int(d) for d in array.shape)


def _as_4d(kernel, name="kernel"):
    """Return ``(kernel_4d, was_2d)``; 2-D kernels get singleton channel axes."""
    ndim = len(kernel.shape)
    if ndim == 4:
        return kernel, False
    if ndim == 2:
        xp = _xp(kernel)
        return xp.reshape(kernel, _shape(kernel) + (1, 1)), True
    raise ValueError(
        f"`{name}` must be a 2-D (kh, kw) or 4-D (kh, kw, in, out) kernel. "
        f"Received shape {tuple(kernel.shape)}"
    )


def kron(*factors):
    """Kronecker product of convolution kernels, the first factor outermost.

    Args:
        *factors: two or more kernels, all 2-D ``(kh, kw)`` or all 4-D
            ``(kh, kw, in, out)``.

    Returns:
        The kernel ``F_0 (x) F_1 (x) ... (x) F_n`` of shape
        ``(prod kh, prod kw[, prod in, prod out])``: along every axis the index
        is ``i = i_0 * prod_{k>0} n_k + ... + i_n``, exactly ``np.kron``.
    """
    if len(factors) == 1 and isinstance(factors[0], (list, tuple)):
        factors = tuple(factors[0])  # kron([A, B, C]) == kron(A, B, C)
    if len(factors) < 2:
        raise ValueError(f"kron needs at least two factors. Received {len(factors)}")
    if _is_numpy(*factors):
        factors = [np.asarray(f) for f in factors]
    ndims = {len(f.shape) for f in factors}
    if len(ndims) != 1 or ndims.pop() not in (2, 4):
        raise ValueError(
            "kron factors must all be 2-D (kh, kw) or all 4-D (kh, kw, in, out). "
            f"Received shapes {[tuple(f.shape) for f in factors]}"
        )
    xp = _xp(*factors)
    result = factors[0]
    for factor in factors[1:]:
        a, b = _shape(result), _shape(factor)
        if len(a) == 2:
            outer = xp.einsum("ab,cd->acbd", result, factor)
        else:
            outer = xp.einsum("abcd,efgh->aebfcgdh", result, factor)
        result = xp.reshape(outer, tuple(m * n for m, n in zip(a, b)))
    return result


def dilate(kernel, rate):
    """The undilated kernel equal to convolving with ``kernel`` at ``rate``.

    ``kernel`` (2-D or 4-D) becomes ``((kh - 1) * rh + 1, (kw - 1) * rw + 1, ...)``
    with the original taps at multiples of the rate and zeros between: the seed's
    ``K (x) E`` with ``E`` the one-hot ``rate x rate`` matrix, trimmed.
    """
    rh, rw = positive_pair(rate, "rate")
    xp = _xp(kernel)
    if xp is np:
        kernel = np.asarray(kernel)
    kernel4, was_2d = _as_4d(kernel)
    kh, kw, cin, cout = _shape(kernel4)
    out = kernel4
    if rh > 1:
        out = xp.pad(xp.reshape(out, (kh, 1, kw, cin, cout)),
                     [(0, 0), (0, rh - 1), (0, 0), (0, 0), (0, 0)])
        out = xp.reshape(out, (kh * rh, kw, cin, cout))[: (kh - 1) * rh + 1]
    if rw > 1:
        h = _shape(out)[0]
        out = xp.pad(xp.reshape(out, (h, kw, 1, cin, cout)),
                     [(0, 0), (0, 0), (0, rw - 1), (0, 0), (0, 0)])
        out = xp.reshape(out, (h, kw * rw, cin, cout))[:, : (kw - 1) * rw + 1]
    if was_2d:
        out = xp.reshape(out, _shape(out)[:2])
    return out


def collapse(kernels, dilation_rates=None):
    """The single kernel equal to a linear cascade of convolutions.

    Args:
        kernels: sequence of kernels applied in order (``kernels[0]`` first), all
            2-D or all 4-D with chained channels (``out`` of one is ``in`` of the
            next). Sizes may differ.
        dilation_rates: one int or ``(rh, rw)`` per kernel. Defaults to all 1.

    Returns:
        ``W`` of shape ``(1 + sum (kh_l - 1) * rh_l, 1 + sum (kw_l - 1) * rw_l,
        in_0, out_L)`` with ``W[p] = sum_{q + v = p} W_prev[q] @ D_l[v]``, where
        ``D_l = dilate(K_l, rate_l)``: convolving with ``W`` at "valid" padding
        equals the cascade at "valid" padding (no activations, no biases).
    """
    kernels = list(kernels)
    if not kernels:
        raise ValueError("collapse needs at least one kernel.")
    if dilation_rates is None:
        dilation_rates = [1] * len(kernels)
    dilation_rates = list(dilation_rates)
    if len(dilation_rates) != len(kernels):
        raise ValueError(
            f"collapse needs one dilation rate per kernel. Received {len(kernels)} "
            f"kernels and {len(dilation_rates)} dilation rates."
        )
    dilation_rates = [positive_pair(rate, f"dilation_rates[{i}]")
                      for i, rate in enumerate(dilation_rates)]
    numpy_in = _is_numpy(*kernels)
    if numpy_in:
        kernels = [np.asarray(k) for k in kernels]
        dtype = np.result_type(*kernels)
    xp = np if numpy_in else _xp(*kernels)
    ndims = {len(k.shape) for k in kernels}
    if len(ndims) != 1:
        raise ValueError(
            "collapse kernels must all be 2-D or all 4-D. Received shapes "
            f"{[tuple(k.shape) for k in kernels]}"
        )
    pairs = [_as_4d(k, f"kernels[{i}]") for i, k in enumerate(kernels)]
    was_2d = pairs[0][1]
    kernels4 = [k for k, _ in pairs]
    for i in range(1, len(kernels4)):
        if _shape(kernels4[i])[2] != _shape(kernels4[i - 1])[3]:
            raise ValueError(
                f"collapse: kernels[{i}] takes {_shape(kernels4[i])[2]} input channels "
                f"but kernels[{i - 1}] gives {_shape(kernels4[i - 1])[3]}. Received "
                f"shapes {[tuple(k.shape) for k in kernels]}"
            )
    total = dilate(kernels4[0], dilation_rates[0])
    for kernel, (rh, rw) in zip(kernels4[1:], dilation_rates[1:]):
        kh, kw = _shape(kernel)[:2]
        th, tw = _shape(total)[:2]
        out_h, out_w = th + (kh - 1) * rh, tw + (kw - 1) * rw
        acc = None
        for i in range(kh):
            for j in range(kw):
                term = xp.einsum("hwab,bc->hwac", total, kernel[i, j])
                top, left = i * rh, j * rw
                term = xp.pad(term, [(top, out_h - th - top), (left, out_w - tw - left),
                                     (0, 0), (0, 0)])
                acc = term if acc is None else acc + term
        total = acc
    if was_2d:
        total = xp.reshape(total, _shape(total)[:2])
    if numpy_in:
        total = np.asarray(total, dtype=dtype)
    return total


def receptive_field(kernel_sizes, dilation_rates=None, strides=None):
    """Receptive field of a stack of convolutions, in input pixels.

    ``rf = 1 + sum_l (k_l - 1) * d_l * prod_{m < l} s_m``. Each entry may be an
    int or an ``(h, w)`` pair; the result is an int when every entry is an int,
    else an ``(h, w)`` tuple.

    >>> receptive_field([3] * 7 + [1], [1, 1, 2, 4, 8, 16, 1, 1])
    67
    """
    kernel_sizes = list(kernel_sizes)
    n = len(kernel_sizes)
    dilation_rates = [1] * n if dilation_rates is None else list(dilation_rates)
    strides = [1] * n if strides is None else list(strides)
    if len(dilation_rates) != n or len(strides) != n:
        raise ValueError(
            "receptive_field needs as many dilation rates and strides as kernel sizes. "
            f"Received {n} kernel sizes, {len(dilation_rates)} dilation rates, "
            f"{len(strides)} strides."
        )
    scalar = all(isinstance(v, (int, np.integer)) for v in kernel_sizes + dilation_rates + strides)
    rf = [1, 1]
    jump = [1, 1]
    for k, d, s in zip(kernel_sizes, dilation_rates, strides):
        k, d, s = (positive_pair(k, "kernel_size"), positive_pair(d, "dilation_rate"),
                   positive_pair(s, "strides"))
        for axis in range(2):
            rf[axis] += (k[axis] - 1) * d[axis] * jump[axis]
            jump[axis] *= s[axis]
    return rf[0] if scalar else tuple(rf)


def kronecker_kernel_shape(factor_shapes):
    """Shape ``(kh, kw, in, out)`` of the Kronecker product of 4-D factor shapes."""
    return tuple(math.prod(s[axis] for s in factor_shapes) for axis in range(4))


def kronecker_channel_scales(log_values, out_sizes):
    """Per-factor output-channel scales whose Kronecker product best fits ``exp(log_values)``.

    The output channel ``c`` of ``F_0 (x) ... (x) F_{m-1}`` is the mixed-radix index
    ``(o_0, ..., o_{m-1})``, ``o_0`` most significant. Fits, by least squares,
    ``log_values[c] ~ mu + sum_k a_k[o_k]`` (the additive main effects of the
    ``out_sizes`` grid) and returns ``[exp(a_0), ..., exp(a_{m-1})]``: dividing each
    factor ``F_k`` by its vector along its output axis divides output channel ``c``
    of the product by ``prod_k exp(a_k[o_k])``.

    Args:
        log_values: ``(prod(out_sizes),)`` array.
        out_sizes: the factors' output channel counts, outermost first.

    Returns:
        A list of ``m`` NumPy vectors, ``(out_sizes[k],)`` each, geometric mean 1.
    """
    sizes = [int(s) for s in out_sizes]
    grid = np.asarray(log_values, np.float64).reshape(sizes)
    grid = grid - grid.mean()
    scales = []
    for k in range(len(sizes)):
        others = tuple(axis for axis in range(len(sizes)) if axis != k)
        scales.append(np.exp(grid.mean(axis=others)))
    return scales


def block_identity(kh, kw, c_in, c_out, groups):
    """A ``(kh, kw, c_in, c_out)`` float64 kernel that is zero except at the centre tap,
    where ``K[a, b] = groups / c_out`` if ``floor(a groups / c_in) == floor(b groups /
    c_out)``, else 0: channel block ``i`` of ``groups`` in maps to block ``i`` out.

    With ``c_in == c_out == groups`` it is the identity convolution (odd sizes); a chain
    of such kernels (with ReLUs, on non-negative inputs) from ``groups`` channels back to
    ``groups`` channels passes its input through (Yu & Koltun's identity initialisation).
    """
    a = np.arange(c_in)[:, None]
    b = np.arange(c_out)[None, :]
    kernel = np.zeros((kh, kw, c_in, c_out), "float64")
    kernel[kh // 2, kw // 2] = ((a * groups // c_in) == (b * groups // c_out)) * (
        groups / c_out)
    return kernel
