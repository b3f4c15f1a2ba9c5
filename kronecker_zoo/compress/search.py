"""Factor-shape search: every two-factor Kronecker shape of a kernel and its best rank
under a parameter budget. Pure NumPy (plus the MAC formulas of `kronecker_zoo.ops`).

A kernel ``(kh, kw, in, out)`` (or a dense ``(in, out)``) splits into two factor shapes
by choosing, along every axis, a divisor pair ``n = n_0 * n_1``. One SVD of the
rearranged kernel per shape gives the approximation error at *every* rank (Eckart-Young),
so the search is exhaustive over two-factor shapes and ranks. The low-rank spatial SVD
of Jaderberg et al. is one of the shapes: ``(kh, 1, in, 1) (x) (1, kw, 1, out)``.
"""

import itertools
import math
from typing import NamedTuple

import numpy as np

from kronecker_zoo import ops as kz_ops
from kronecker_zoo.compress.nearest import rearrange


class Candidate(NamedTuple):
    """One factorisation of a kernel: ``factors`` (outermost first) summed ``rank`` times.

    ``params``: kernel parameters (``rank * sum |S_k|``, bias not included);
    ``relative_error``: ``||W - W_approx|| / ||W||`` of the nearest Kronecker sum;
    ``macs``: multiply-accumulates per example of the factored execution (``None`` for
    a dense kernel without an input size).
    """

    factors: tuple
    rank: int
    params: int
    relative_error: float
    macs: int


def _divisor_pairs(n):
    return [(d, n // d) for d in range(1, n + 1) if n % d == 0]


def two_factor_shapes(kernel_shape):
    """Every ``(S_0, S_1)`` with ``S_0 * S_1 == kernel_shape`` axis by axis, each factor
    with more than one entry (a one-entry factor is the kernel itself)."""
    shapes = []
    for split in itertools.product(*[_divisor_pairs(int(n)) for n in kernel_shape]):
        outer = tuple(a for a, _ in split)
        inner = tuple(b for _, b in split)
        if math.prod(outer) > 1 and math.prod(inner) > 1:
            shapes.append((outer, inner))
    return shapes


class KernelSpectrum(NamedTuple):
    """The singular values of one kernel under one two-factor shape."""

    factors: tuple
    squared_tail: np.ndarray  # squared_tail[r]: ||W - best rank-r sum||^2 (r = 0..full)
    norm_squared: float


def spectra(kernel, shapes=None):
    """`KernelSpectrum` of ``kernel`` for each of ``shapes`` (default: every shape of
    `two_factor_shapes`)."""
    kernel = np.asarray(kernel, np.float64)
    result = []
    for factors in shapes if shapes is not None else two_factor_shapes(kernel.shape):
        s = np.linalg.svd(rearrange(kernel, factors), compute_uv=False)
        tail = np.concatenate([np.cumsum((s ** 2)[::-1])[::-1], [0.0]])
        result.append(KernelSpectrum(factors, tail, float(np.sum(s ** 2))))
    return result


def conv_macs(factors, rank, input_hw, strides, padding):
    """MACs per example of the factored `KroneckerConv2D` with the lowering it will choose
    (``None`` without an input size)."""
    if len(factors[0]) == 2:  # a KroneckerDense: per input vector
        return kz_ops.kronecker_matmul_macs(factors, rank)
    if input_hw is None or None in tuple(input_hw):
        return None
    lowering = kz_ops.choose_lowering(tuple(input_hw), factors, rank, tuple(strides), padding)
    return kz_ops.factored_conv_macs(tuple(input_hw), factors, rank, tuple(strides), padding,
                                     lowering=lowering)


class Option(NamedTuple):
    """A shape of one kernel with its costs per rank term."""

    spectrum: KernelSpectrum
    params_per_rank: int
    macs_per_rank: int  # None for a convolution without an input size


def options(kernel_spectra, input_hw=None, strides=(1, 1), padding="same"):
    """`Option` for every spectrum (MACs are linear in the rank)."""
    return [Option(s, sum(math.prod(f) for f in s.factors),
                   conv_macs(s.factors, 1, input_hw, strides, padding))
            for s in kernel_spectra]


def conv_cost(factors, rank, input_hw, strides=(1, 1), padding="same", runtime=None):
    """The planner's cost per example of the factored `KroneckerConv2D` on ``runtime``
    (`kronecker_zoo.ops.factored_conv_cost` of its cheaper lowering, in plain-convolution
    MACs: tiled MACs, grouped MACs and moved elements weighted as measured on that
    runtime). Convolution factors only: a Dense layer's cost is its MACs."""
    costs = kz_ops.lowering_costs(tuple(input_hw), factors, rank, tuple(strides), padding,
                                  runtime)
    return min(costs.values())


def best_candidate(kernel_options, budget, max_cost=None, cost=None):
    """The candidate of least relative error with at most ``budget`` kernel parameters
    (fewer MACs break ties). With ``max_cost``, each shape takes the highest rank the budget
    allows whose ``cost(factors, rank)`` (default: its MACs; costs grow with the rank) is
    at most ``max_cost``; a shape over it even at rank 1 is excluded. When no shape fits
    the budget, the rank-1 candidate with the fewest parameters; ``None`` only when
    ``max_cost`` excludes every shape."""
    best, best_key = None, None
    smallest = min(o.params_per_rank for o in kernel_options)
    for option in kernel_options:
        spectrum = option.spectrum
        full = len(spectrum.squared_tail) - 1
        rank = min(max(budget, smallest) // option.params_per_rank, full)
        if rank < 1:
            continue
        if max_cost is not None:
            rank = _highest_rank_within(option, rank, max_cost, cost)
            if rank < 1:
                continue
        macs = None if option.macs_per_rank is None else rank * option.macs_per_rank
        norm = spectrum.norm_squared
        error = math.sqrt(max(spectrum.squared_tail[rank], 0.0) / norm) if norm else 0.0
        key = (round(error, 9), macs if macs is not None else 0, rank * option.params_per_rank)
        if best_key is None or key < best_key:
            best_key = key
            best = Candidate(spectrum.factors, int(rank), int(rank * option.params_per_rank),
                             error, macs)
    return best


def _highest_rank_within(option, rank, max_cost, cost):
    """The highest rank ``<= rank`` of ``option`` whose price (``cost(factors, r)``, or
    its MACs) is at most ``max_cost`` (bisection: prices grow with the rank); 0 if none.
    A price that cannot be counted (``None``: no input size) is within any cap."""
    def within(r):
        price = (None if option.macs_per_rank is None else r * option.macs_per_rank) \
            if cost is None else cost(option.spectrum.factors, r)
        return price is None or price <= max_cost

    if within(rank):
        return rank
    lo, hi = 0, rank  # within(lo) (or lo == 0), not within(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if within(mid) else (lo, mid)
    return lo
