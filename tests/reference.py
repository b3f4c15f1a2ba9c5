"""Independent pure-NumPy reference for 2-D convolution (test oracle).

Deliberately written from the definitions only; it imports nothing from
``kronecker_zoo``. Everything is computed in float64.

Conventions (Keras / TensorFlow): channels last, inputs ``(N, H, W, C)``, kernels
``(kh, kw, in, out)``, and a convolution is a cross-correlation::

    y[n, i, j, o] = sum_{u, v, c} xp[n, i * sh + u * dh, j * sw + v * dw, c] * K[u, v, c, o]

where ``xp`` is the (possibly padded) input. "same" padding follows TF exactly:
``out = ceil(n / s)``, ``total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)``,
``before = total // 2``, ``after = total - before``.
"""

import numpy as np

NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "symmetric": "symmetric"}


def as_pair(value):
    """An int or a pair of ints as a tuple ``(h, w)``."""
    if np.ndim(value) == 0:
        return (int(value), int(value))
    h, w = value
    return (int(h), int(w))


def same_pad_amounts(n, k, s=1, d=1):
    """``(before, after)`` of TF "same" padding along one axis of length ``n``."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def pad_same(x, kernel_hw, strides=1, dilation=1, mode="zeros"):
    """Pad ``x`` (N, H, W, C) as TF "same" would, with ``mode`` values."""
    x = np.asarray(x, dtype=np.float64)
    (kh, kw), (sh, sw), (dh, dw) = as_pair(kernel_hw), as_pair(strides), as_pair(dilation)
    top, bottom = same_pad_amounts(x.shape[1], kh, sh, dh)
    left, right = same_pad_amounts(x.shape[2], kw, sw, dw)
    widths = [(0, 0), (top, bottom), (left, right), (0, 0)]
    return np.pad(x, widths, mode=NP_PAD_MODES[mode])


def conv2d(x, kernel, strides=1, dilation=1, padding="valid", padding_mode="zeros"):
    """Reference 2-D cross-correlation, float64.

    Args:
        x: (N, H, W, C_in) array.
        kernel: (kh, kw, C_in, C_out) array.
        strides, dilation: int or (h, w) pair.
        padding: "valid" or "same" (TF semantics, see module docstring).
        padding_mode: "zeros", "reflect" or "symmetric" (values of "same" padding).

    Returns:
        (N, H', W', C_out) float64 array.
    """
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError("conv2d expects a 4-D input and a 4-D kernel")
    if x.shape[3] != kernel.shape[2]:
        raise ValueError("channel mismatch between input and kernel")
    kh, kw, _, cout = kernel.shape
    sh, sw = as_pair(strides)
    dh, dw = as_pair(dilation)
    if padding == "same":
        x = pad_same(x, (kh, kw), (sh, sw), (dh, dw), padding_mode)
    elif padding != "valid":
        raise ValueError(f"unknown padding {padding!r}")
    n, h, w, _ = x.shape
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if h < eh or w < ew:
        raise ValueError("input smaller than the (dilated) kernel extent")
    oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
    y = np.zeros((n, oh, ow, cout), dtype=np.float64)
    for u in range(kh):
        for v in range(kw):
            r0, c0 = u * dh, v * dw
            patch = x[:, r0: r0 + (oh - 1) * sh + 1: sh, c0: c0 + (ow - 1) * sw + 1: sw, :]
            y += np.einsum("nhwc,co->nhwo", patch, kernel[u, v])
    return y


def cascade(x, kernels, dilations=None, strides=None, padding="valid"):
    """Run ``kernels`` one after the other (kernels[0] first), no bias/activation."""
    dilations = [1] * len(kernels) if dilations is None else dilations
    strides = [1] * len(kernels) if strides is None else strides
    y = np.asarray(x, dtype=np.float64)
    for k, d, s in zip(kernels, dilations, strides):
        y = conv2d(y, k, strides=s, dilation=d, padding=padding)
    return y


def kron_kernel(factors):
    """``sum_r kron(F_0[r], ..., F_{m-1}[r])`` with np.kron, for (rank, kh, kw, in, out) factors."""
    factors = [np.asarray(f, dtype=np.float64) for f in factors]
    rank = factors[0].shape[0]
    total = None
    for r in range(rank):
        term = factors[0][r]
        for f in factors[1:]:
            term = np.kron(term, f[r])
        total = term if total is None else total + term
    return total
