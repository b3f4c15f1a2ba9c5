"""The nearest sum of Kronecker products to a given kernel (Van Loan & Pitsianis, 1993).

Pure NumPy. For factor shapes ``S_0, ..., S_{m-1}`` (each ``(kh, kw, in, out)`` for a
convolution kernel or ``(in, out)`` for a dense matrix, the first outermost as in
`kronecker_zoo.kernels.kron`), the rearrangement ``R`` maps a kernel ``W`` to an m-way
tensor of shape ``(|S_0|, ..., |S_{m-1}|)`` (``|S|`` = number of entries) so that

    W = sum_r F_0[r] (x) ... (x) F_{m-1}[r]   <=>   R(W) = sum_r vec F_0[r] o ... o vec F_{m-1}[r]

(``o`` the outer product), and ``R`` is a permutation of entries, so it keeps the
Frobenius norm. The best Kronecker sum is thus the best CP approximation of ``R(W)``:
for two factors a truncated SVD of a matrix, whose error is the norm of the discarded
singular values (Eckart-Young).
"""

import math
from typing import NamedTuple, Optional

import numpy as np


class NearestKronecker(NamedTuple):
    """Result of `nearest_kronecker`.

    factors: one array per factor, ``(rank,) + S_k``, outermost first (the layout of
        `KroneckerConv2D` / `KroneckerDense` factor weights).
    error: ``||W - sum_r F_0[r] (x) ... (x) F_{m-1}[r]||_F``.
    relative_error: ``error / ||W||_F`` (0 for a zero kernel).
    singular_values: two factors: every singular value of the rearranged matrix, in
        decreasing order (``error`` is the norm of those past ``rank``); else ``None``.
    """

    factors: list
    error: float
    relative_error: float
    singular_values: Optional[np.ndarray]


def check_factor_shapes(kernel_shape, factor_shapes):
    """Normalise ``factor_shapes`` to tuples; raise unless their products give the kernel."""
    kernel_shape = tuple(int(d) for d in kernel_shape)
    try:
        shapes = [tuple(int(d) for d in s) for s in factor_shapes]
    except (TypeError, ValueError):  # not a sequence of sequences of ints
        shapes = None
    if not shapes or len(shapes) < 2 or any(len(s) != len(kernel_shape) for s in shapes) or (
            min(min(s) for s in shapes) < 1):
        raise ValueError(
            f"factor_shapes must be two or more shapes of {len(kernel_shape)} positive ints "
            f"(one per kernel axis), outermost first. Received: {factor_shapes!r}")
    product = tuple(math.prod(s[a] for s in shapes) for a in range(len(kernel_shape)))
    if product != kernel_shape:
        raise ValueError(f"The factor shapes {shapes} multiply to {product} along the kernel "
                         f"axes, but the kernel has shape {kernel_shape}")
    return shapes


def rearrange(kernel, factor_shapes):
    """``R(W)``: the m-way tensor ``(|S_0|, ..., |S_{m-1}|)`` of the module docstring."""
    kernel = np.asarray(kernel)
    shapes = check_factor_shapes(kernel.shape, factor_shapes)
    m, n = len(shapes), kernel.ndim
    # axis a of W splits into (S_0[a], ..., S_{m-1}[a]) (mixed radix, S_0 most significant)
    split = kernel.reshape([s[a] for a in range(n) for s in shapes])
    order = [a * m + k for k in range(m) for a in range(n)]  # group the axes by factor
    return split.transpose(order).reshape([math.prod(s) for s in shapes])


def nearest_kronecker(kernel, factor_shapes, rank=1, iterations=500, tolerance=1e-10):
    """The factors whose Kronecker sum best approximates ``kernel`` in Frobenius norm.

    Minimises ``||W - sum_{r < rank} F_0[r] (x) F_1[r] (x) ... (x) F_{m-1}[r]||_F``.

    - Two factors: truncated SVD of the rearranged ``(|S_0|, |S_1|)`` matrix, the
      optimum (Eckart-Young); exact when ``rank >= min(|S_0|, |S_1|)`` (full rank) or
      the kernel is such a sum; the error is the norm of the discarded singular values.
      Each term's scale is split evenly between its two factors (``sqrt(s_r)`` each).
    - Three or more factors: the best rank-``rank`` CP approximation of the rearranged
      m-way tensor has no closed form (and for ``rank > 1`` need not exist), so this runs
      alternating least squares (CP-ALS) from the leading singular vectors of the
      tensor's unfoldings (HOSVD), up to ``iterations`` sweeps or until the relative
      error improves by less than ``tolerance``. Every sweep lowers or keeps the error;
      the result is a local optimum. A kernel that is one Kronecker product of these
      shapes is recovered exactly at ``rank=1``. Each term's norm is split evenly over
      its ``m`` factors.

    Args:
        kernel: ``(kh, kw, in, out)`` convolution kernel or ``(in, out)`` matrix.
        factor_shapes: two or more shapes with as many axes as ``kernel``, outermost first;
            along every axis their product is the kernel's size.
        rank: number of Kronecker products summed (>= 1).

    Returns:
        `NearestKronecker` (factors ``(rank,) + S_k`` in the kernel's float dtype,
        float64 computation).
    """
    kernel = np.asarray(kernel)
    if not _is_real_float(kernel.dtype):
        raise ValueError(f"kernel must be a float array. Received dtype {kernel.dtype}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a positive int. Received: rank={rank!r}")
    shapes = check_factor_shapes(kernel.shape, factor_shapes)
    tensor = rearrange(kernel.astype(np.float64), shapes)
    norm = float(np.linalg.norm(tensor))
    singular_values = None
    if len(shapes) == 2:
        u, s, vt = np.linalg.svd(tensor, full_matrices=False)
        k = min(rank, len(s))
        root = np.sqrt(s[:k])
        vectors = [(u[:, :k] * root).T, vt[:k] * root[:, None]]
        singular_values = s
    else:
        vectors = _cp_als(tensor, rank, iterations, tolerance)
    vectors = [np.concatenate([v, np.zeros((rank - len(v), v.shape[1]))]) for v in vectors]
    factors = [v.reshape((rank,) + s).astype(kernel.dtype) for v, s in zip(vectors, shapes)]
    error = float(np.linalg.norm(tensor - _cp_tensor(vectors)))
    if singular_values is not None:  # the same number, without round-off growth
        error = float(np.sqrt(np.sum(singular_values[rank:] ** 2)))
    return NearestKronecker(factors, error, error / norm if norm else 0.0, singular_values)


def _is_real_float(dtype):
    """NumPy's float dtypes and the ml_dtypes ones Keras variables hold (``bfloat16``,
    ``float8_*``; NumPy sees them as opaque ``V`` types)."""
    if np.issubdtype(dtype, np.floating):
        return True
    if dtype.kind != "V":
        return False
    try:
        import ml_dtypes  # installed with Keras
        ml_dtypes.finfo(dtype)
    except (ImportError, TypeError, ValueError):
        return False
    return True


def _cp_tensor(vectors):
    """``sum_r v_0[r] o v_1[r] o ...`` for ``vectors[k]`` of shape ``(rank, n_k)``."""
    letters = "abcdefghijklmnopqrstuvwxyz"[:len(vectors)]
    spec = ",".join("z" + c for c in letters) + "->" + letters
    return np.einsum(spec, *vectors)


def _cp_als(tensor, rank, iterations, tolerance):
    """Rank-``rank`` CP factors ``[(rank, n_k)]`` of ``tensor`` by alternating least squares."""
    m = tensor.ndim
    unfold = [np.moveaxis(tensor, k, 0).reshape(tensor.shape[k], -1) for k in range(m)]
    vectors = []
    for k in range(m):  # HOSVD start; modes with fewer than `rank` dims repeat vectors
        u = np.linalg.svd(unfold[k], full_matrices=False)[0]
        vectors.append(np.stack([u[:, r % u.shape[1]] for r in range(rank)]))
    norm = np.linalg.norm(tensor) or 1.0
    previous = np.inf
    for _ in range(iterations):
        for k in range(m):
            others = [vectors[j] for j in range(m) if j != k]
            gram = np.ones((rank, rank))
            for v in others:
                gram *= v @ v.T
            khatri_rao = others[0]
            for v in others[1:]:  # rows (r, i_j ... ) in the unfolding's column order
                khatri_rao = (khatri_rao[:, :, None] * v[:, None, :]).reshape(rank, -1)
            vectors[k] = np.linalg.lstsq(gram, khatri_rao @ unfold[k].T, rcond=None)[0]
        error = np.linalg.norm(tensor - _cp_tensor(vectors)) / norm
        if previous - error < tolerance:
            break
        previous = error
    scales = np.prod([np.linalg.norm(v, axis=1) for v in vectors], axis=0)
    balanced = np.where(scales > 0, scales, 1.0) ** (1.0 / m)
    return [v / np.where(np.linalg.norm(v, axis=1, keepdims=True) > 0,
                         np.linalg.norm(v, axis=1, keepdims=True), 1.0) * balanced[:, None]
            for v in vectors]
