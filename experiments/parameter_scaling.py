"""Parameters vs spatial extent ``k`` of one ``C -> C`` convolution (``C = 64``, with bias).

Per parametrisation (``+ C`` bias everywhere, as the Keras layers have by default):

* dense ``k x k`` (`keras.layers.Conv2D`):            ``C^2 k^2 + C``           quadratic in k
* `LowRankConv2D`, rank ``R`` (``k x 1`` then ``1 x k``): ``R (k C + k C) + C``   linear
  (``R = C`` equals the rank-1-per-channel-pair separable count ``r (k + k) C^2``, r = 1)
* depthwise separable (`keras.layers.SeparableConv2D`): ``k^2 C + C^2 + C``      quadratic
  (``C^2`` dominates until ``k^2 > C``)
* `KroneckerConv2D` with ``n = ceil(log_3 k)`` factors of 3x3 (extent ``3^n >= k``; exact at
  powers of 3), channels as in the zoo (`kronecker_zoo.models.convs.kronecker_factor_shapes`:
  ``(3,3,8,8), (3,3,1,1) ... (3,3,1,1), (3,3,8,8)``; ``k = 3``: ``(3,3,8,8) (x) (1,1,8,8)``),
  rank ``r``: ``r (2 * 9 * 8 * 8 + 9 (n - 2)) + C`` for ``n >= 2``   logarithmic in k

Every formula is checked against ``count_params()`` of real built layers where they fit in
memory (all of them for the Kronecker layers: k = 3, 9, 27, 81, 243).

    python experiments/parameter_scaling.py --out docs/experiments [--tiny]
"""

import math
import os
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.common import command, write_json  # noqa: E402

NAME = "parameter_scaling"
CHANNELS = 64
EXTENTS = (3, 5, 7, 9, 15, 21, 27, 45, 63, 81, 135, 189, 243)
LOW_RANKS = (64, 8)
KRON_RANKS = (1, 4)
MAX_BUILD = {"dense": 27, "depthwise_separable": 81, "low_rank": 243, "kronecker": 243}


def _check(k, channels):
    for name, v in (("k", k), ("channels", channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={v!r}")


def kronecker_depth(k):
    """``n = ceil(log_3 k)`` (at least 1): the number of 3x3 factors covering extent ``k``."""
    _check(k, 1)
    n = 0
    while 3**n < k:
        n += 1
    return max(n, 1)


def kronecker_factors(k, channels=CHANNELS):
    """Factor shapes of the zoo's KroneckerConv2D of extent ``3^ceil(log_3 k)``."""
    from kronecker_zoo.models.blocks import split_channels
    from kronecker_zoo.models.convs import kronecker_factor_shapes

    n = kronecker_depth(k)
    if n == 1:  # KroneckerConv2D needs two factors: the channel-only inner one is 1x1
        (a, b), (c, d) = split_channels(channels), split_channels(channels)
        return [(3, 3, a, c), (1, 1, b, d)]
    return kronecker_factor_shapes(channels, channels, [3] * n)


def formulas(k, channels=CHANNELS):
    """``{series: parameters}`` of one ``channels -> channels`` layer of extent ``k``."""
    _check(k, channels)
    c = channels
    out = {"dense": c * c * k * k + c,
           "depthwise_separable": k * k * c + c * c + c}
    for r in LOW_RANKS:
        out[f"low_rank_R{r}"] = r * (k * c + k * c) + c
    per_term = sum(math.prod(s) for s in kronecker_factors(k, c))
    for r in KRON_RANKS:
        out[f"kronecker_r{r}"] = r * per_term + c
    return out


def build_counts(k, channels=CHANNELS, max_build=None):
    """``count_params()`` of the real layers (those whose extent is within ``max_build``)."""
    import keras

    from kronecker_zoo.layers import KroneckerConv2D, LowRankConv2D

    max_build = MAX_BUILD if max_build is None else max_build
    shape = (None, None, None, channels)
    layers = {}
    if k <= max_build["dense"]:
        layers["dense"] = keras.layers.Conv2D(channels, k)
    if k <= max_build["depthwise_separable"]:
        layers["depthwise_separable"] = keras.layers.SeparableConv2D(channels, k)
    if k <= max_build["low_rank"]:
        for r in LOW_RANKS:
            layers[f"low_rank_R{r}"] = LowRankConv2D(channels, k, rank=r)
    if k <= max_build["kronecker"] and 3 ** kronecker_depth(k) == k:
        for r in KRON_RANKS:
            layers[f"kronecker_r{r}"] = KroneckerConv2D(
                channels, k, kronecker_factors(k, channels), rank=r, execution="factored")
    counts = {}
    for name, layer in layers.items():
        layer.build(shape)
        counts[name] = int(layer.count_params())
    return counts


GROWTH = {"dense": "quadratic", "depthwise_separable": "quadratic (C^2 dominates small k)",
          "low_rank": "linear", "kronecker": "logarithmic"}


def growth_label(slope):
    """Name the log-log slope between k = 27 and 243."""
    if slope > 1.5:
        return "quadratic"
    if slope > 0.5:
        return "linear"
    return "logarithmic (or slower)"


def _label(name, family):
    c = CHANNELS
    if family == "dense":
        return f"Conv2D: C^2 k^2 ({GROWTH[family]})"
    if family == "depthwise_separable":
        return f"SeparableConv2D: k^2 C + C^2 ({GROWTH[family]})"
    if family == "low_rank":
        r = int(name.rsplit("R", 1)[1])
        note = ", = rank 1 per channel pair" if r == c else ""
        return f"LowRankConv2D R={r}: 2 R k C{note} ({GROWTH[family]})"
    r = int(name.rsplit("r", 1)[1])
    return f"KroneckerConv2D rank {r}, 3x3 factors, extent 3^ceil(log3 k) ({GROWTH[family]})"


def _figure(path, extents, table, built):
    from experiments.figures import new_figure

    fig = new_figure((9, 6))
    ax = fig.subplots()
    series = list(table[str(extents[0])])
    for i, name in enumerate(series):
        family = next(f for f in GROWTH if name.startswith(f))
        ys = [table[str(k)][name] for k in extents]
        ax.plot(extents, ys, "-", color=f"C{i}", label=_label(name, family))
        bk = [k for k in extents if name in built[str(k)]]
        ax.plot(bk, [built[str(k)][name] for k in bk], "o", mfc="none", color=f"C{i}", ms=7)
    ax.set(xscale="log", yscale="log", xlabel="kernel extent k (pixels)",
           ylabel="parameters of one 64 -> 64 layer",
           title="Parameters vs extent (lines: formulas; circles: count_params of built layers)")
    ax.set_xticks(list(extents))
    ax.set_xticklabels([str(k) for k in extents], fontsize=8)
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def run(out_dir, tiny=False):
    """Tabulate formulas, check them against built layers, write JSON and a PNG."""
    os.makedirs(out_dir, exist_ok=True)
    extents = (3, 5, 9, 27) if tiny else EXTENTS
    max_build = {"dense": 9, "depthwise_separable": 9, "low_rank": 27, "kronecker": 27} \
        if tiny else MAX_BUILD
    table = {str(k): formulas(k) for k in extents}
    built = {str(k): build_counts(k, max_build=max_build) for k in extents}
    mismatches = [(k, n, c, table[k][n]) for k, counts in built.items()
                  for n, c in counts.items() if c != table[k][n]]
    if mismatches:
        raise RuntimeError(f"formula != count_params for (k, series, built, formula): "
                           f"{mismatches}")
    lo, hi = (extents[0], extents[-1]) if tiny else (27, 243)
    slopes = {n: math.log(table[str(hi)][n] / table[str(lo)][n]) / math.log(hi / lo)
              for n in table[str(lo)]}
    ratio = {str(k): {n: table[str(k)][n] / table[str(k)]["dense"] for n in table[str(k)]}
             for k in extents}
    k_max = str(extents[-1])
    kron = {str(k): table[str(k)]["kronecker_r1"] for k in extents}
    finding = (
        f"C = {CHANNELS}, k = {extents[0]} .. {extents[-1]}. Log-log slopes between k = {lo} and "
        f"{hi}: " + ", ".join(f"{n} {s:.2f}" for n, s in slopes.items()) + ". At k = "
        f"{k_max}: dense {table[k_max]['dense']:,}, depthwise separable "
        f"{table[k_max]['depthwise_separable']:,}, LowRankConv2D R=64 "
        f"{table[k_max]['low_rank_R64']:,}, Kronecker rank 1 {table[k_max]['kronecker_r1']:,} "
        f"(rank 4: {table[k_max]['kronecker_r4']:,}); from k = 9 on, each extra 3x3 factor "
        f"(x3 in extent) adds 9 parameters per rank: rank 1 goes from {kron[str(extents[0])]:,} "
        f"at k = {extents[0]} to {kron[k_max]:,} at k = {k_max}. All "
        f"{sum(len(c) for c in built.values())} built layers' count_params equal the formulas.")
    figs = [f"{NAME}.png"]
    _figure(os.path.join(out_dir, figs[0]), extents, table, built)
    result = {
        "claim": ("Seed note: low-rank kernels need parameters linear in the spatial extent, "
                  "Kronecker-factored kernels (dilated cascades) only logarithmic."),
        "finding": finding,
        "tiny": bool(tiny), "channels": CHANNELS, "extents": list(extents),
        "formulas": {
            "dense": "C^2 k^2 + C",
            "depthwise_separable": "k^2 C + C^2 + C",
            "low_rank_R": "R (k C + k C) + C  (LowRankConv2D; R = C equals r (k + k) C^2 + C "
                          "with r = 1 per channel pair)",
            "kronecker_r": "r (2 * 9 * 8 * 8 + 9 (n - 2)) + C, n = ceil(log_3 k) >= 2 "
                           "(k = 3: r (9 * 8 * 8 + 8 * 8) + C)",
        },
        "params": table, "built_count_params": built, "ratio_to_dense": ratio,
        "loglog_slope": {"between": [lo, hi], "slopes": slopes,
                         "growth": {n: growth_label(s) for n, s in slopes.items()}},
        "kronecker_factors": {str(k): [list(s) for s in kronecker_factors(k)] for k in extents},
        "figures": figs,
    }
    return write_json(out_dir, NAME, result)


main = command(__doc__, NAME, run)


if __name__ == "__main__":
    main()
