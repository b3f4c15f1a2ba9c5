"""The seed identity "dilated cascade == Kronecker kernel", checked, and where it stops holding.

Exact case (single channel, linear, kernel size == dilation base): ``a x a`` kernels
``K_0, ..., K_{L-1}`` run as a cascade of "valid" correlations at dilations
``1, a, ..., a^(L-1)`` (``K_0`` first, at dilation 1) equal one correlation with

    W = K_{L-1} (x) ... (x) K_1 (x) K_0          (first factor outermost, as np.kron)

i.e. the *last* (coarsest) layer is the outermost factor. Checked two ways: with
`kronecker_zoo.kernels.collapse` / `kron`, and independently by running the cascade
with a plain NumPy tap-loop correlation and comparing to one correlation with the
``np.kron`` kernel. Where it stops holding (errors relative to the output / kernel scale):

(a) overlapping taps: 3x3 kernels at dilations 1, 2, 4 collapse to a 15x15 kernel that is
    not a Kronecker product: best Kronecker approximation error (Van Loan-Pitsianis);
(b) a ReLU between the layers, on Fashion-MNIST test images;
(c) several channels: ``W[:, :, c, o] = sum_m K_1[:, :, m, o] (x) K_0[:, :, c, m]`` (a sum
    over channel paths); a 4-D Kronecker product ``F_1 (x) F_0`` only when each layer
    mixes only its own channel sub-index (``K_1 = F_1 (x) I``, ``K_0 = I (x) F_0``).

    python experiments/cascade_identity.py --out docs/experiments [--tiny]
"""

import functools
import os
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.common import command, write_json  # noqa: E402
from experiments.kronecker_expressivity import kronecker_errors  # noqa: E402
from kronecker_zoo import kernels as kz  # noqa: E402

NAME = "cascade_identity"
TINY_FLOOR = 1e-17  # zero errors are drawn at this value on the log-scale bar chart


# -- plain NumPy reference convolution ------------------------------------------------


def correlate(x, kernel, dilation=1):
    """"Valid" dilated cross-correlation, a tap loop in NumPy (independent of kronecker_zoo).

    ``y[p, q, o] = sum_{u, v, c} x[p + d u, q + d v, c] * K[u, v, c, o]``. ``x``: ``(H, W)``
    with ``K`` ``(kh, kw)``, or ``(H, W, C)`` with ``K`` ``(kh, kw, C, O)``; a leading batch
    axis is allowed (``(N, H, W)`` / ``(N, H, W, C)``).
    """
    x = np.asarray(x)
    kernel = np.asarray(kernel)
    if kernel.ndim not in (2, 4):
        raise ValueError(f"kernel must be 2-D or 4-D. Received shape {kernel.shape}")
    spatial = 2 if kernel.ndim == 2 else 3  # number of trailing non-batch axes of x
    if x.ndim not in (spatial, spatial + 1):
        raise ValueError(f"x of shape {x.shape} does not fit a kernel of shape {kernel.shape}")
    if kernel.ndim == 4 and x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"x has {x.shape[-1]} channels, kernel takes {kernel.shape[2]}")
    if not (isinstance(dilation, (int, np.integer)) and dilation >= 1):
        raise ValueError(f"dilation must be a positive int. Received {dilation!r}")
    kh, kw = kernel.shape[:2]
    h_axis = x.ndim - spatial
    h, w = x.shape[h_axis], x.shape[h_axis + 1]
    oh, ow = h - dilation * (kh - 1), w - dilation * (kw - 1)
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel extent exceeds the input: x {x.shape}, kernel {kernel.shape}, "
                         f"dilation {dilation}")
    out = None
    for u in range(kh):
        for v in range(kw):
            patch = x[..., dilation * u: dilation * u + oh, dilation * v: dilation * v + ow] \
                if kernel.ndim == 2 else \
                x[..., dilation * u: dilation * u + oh, dilation * v: dilation * v + ow, :]
            term = patch * kernel[u, v] if kernel.ndim == 2 else patch @ kernel[u, v]
            out = term if out is None else out + term
    return out


def run_cascade(x, kernels, dilations, activation=None):
    """Apply ``kernels[0]`` first at ``dilations[0]``; ``activation`` between layers only."""
    for i, (k, d) in enumerate(zip(kernels, dilations)):
        x = correlate(x, k, d)
        if activation is not None and i < len(kernels) - 1:
            x = activation(x)
    return x


def np_kron_all(factors):
    return functools.reduce(np.kron, factors)


def _rel(err, ref):
    return float(np.linalg.norm(err) / np.linalg.norm(ref))


# -- the cases -----------------------------------------------------------------------


def exact_case(a, num_layers, rng, extra=31):
    """``a x a`` kernels at dilations ``a^l``: collapse vs kron; the cascade run vs one conv."""
    ks = [rng.standard_normal((a, a)) for _ in range(num_layers)]
    dil = [a**l for l in range(num_layers)]
    extent = a**num_layers
    x = rng.standard_normal((extent + extra, extent + extra))
    w_collapse = kz.collapse(ks, dil)
    w_kron = kz.kron(*ks[::-1])              # K_{L-1} (x) ... (x) K_0
    w_np = np_kron_all(ks[::-1])
    w_wrong = np_kron_all(ks)                # K_0 (x) ... (x) K_{L-1}: the wrong order
    y_cascade = run_cascade(x, ks, dil)
    y_one = correlate(x, w_np)
    scale = float(np.abs(y_cascade).max())
    return {
        "a": a, "layers": num_layers, "dilations": dil, "kernel_extent": extent,
        "collapse_vs_kron_max_abs": float(np.abs(w_collapse - w_kron).max()),
        "kron_vs_np_kron_max_abs": float(np.abs(w_kron - w_np).max()),
        "cascade_vs_one_conv_max_abs": float(np.abs(y_cascade - y_one).max()),
        "cascade_vs_one_conv_max_rel": float(np.abs(y_cascade - y_one).max() / scale),
        "wrong_order_rel_fro": _rel(y_cascade - correlate(x, w_wrong), y_cascade),
        "output_max_abs": scale,
    }


def overlap_case(rng, size=3, dilations=(1, 2, 4), extra=31):
    """3x3 kernels at 1, 2, 4: the collapsed 15x15 kernel vs Kronecker structure."""
    ks = [rng.standard_normal((size, size)) for _ in dilations]
    w = kz.collapse(ks, list(dilations))
    n = w.shape[0]
    x = rng.standard_normal((n + extra, n + extra))
    y_cascade = run_cascade(x, ks, dilations)
    naive = np_kron_all(ks[::-1])                 # what the seed formula would claim
    pad = (naive.shape[0] - n) // 2
    embedded = np.pad(w, pad)                     # centred in the naive kernel's extent
    best = {}
    for p in range(2, n):
        if n % p == 0:                            # every 2-factor spatial split, p x p outer
            errs = kronecker_errors(w, (p, p), (n // p, n // p))
            best[f"{p}x{p} (x) {n // p}x{n // p}"] = errs
    # control: the same kernels at dilations size^l are exactly one Kronecker product
    control = kz.collapse(ks, [size**l for l in range(len(ks))])
    control_err = kronecker_errors(control, (size,) * 2, (size ** (len(ks) - 1),) * 2)[1]
    return {
        "kernels": ks, "collapsed": w, "naive_kron": naive,
        "collapsed_extent": n, "naive_kron_extent": naive.shape[0],
        "cascade_vs_collapse_rel_max": float(
            np.abs(y_cascade - correlate(x, w)).max() / np.abs(y_cascade).max()),
        "collapsed_vs_naive_kron_rel_fro": _rel(embedded - naive, embedded),
        "best_kronecker_rel_errors": best,
        "control_dilations_3l_rank1_rel_error": control_err,
    }


def relu_case(images, rng, a=3, num_layers=3, nonnegative=False, draws=1):
    """ReLU between the layers vs the linear collapsed conv, on padded-once images.

    ``draws`` independent kernel sets; errors are ``||y_relu - y_lin||_F / ||y_lin||_F``.
    """
    dil = [a**l for l in range(num_layers)]
    r = (a**num_layers - 1) // 2
    x = np.pad(images, [(0, 0), (r, r), (r, r)])  # pad once: outputs keep the image size
    errors, max_errors, clipped = [], [], []
    for _ in range(draws):
        ks = [rng.standard_normal((a, a)) for _ in range(num_layers)]
        if nonnegative:
            ks = [np.abs(k) for k in ks]
        y_relu = run_cascade(x, ks, dil, activation=lambda t: np.maximum(t, 0.0))
        y_lin = correlate(x, np_kron_all(ks[::-1]))
        errors.append(_rel(y_relu - y_lin, y_lin))
        max_errors.append(float(np.abs(y_relu - y_lin).max() / np.abs(y_lin).max()))
        h = x  # fraction of hidden pre-activations that the ReLU changes
        for k, d in zip(ks[:-1], dil[:-1]):
            h = correlate(h, k, d)
            clipped.append(float(np.mean(h < 0)))
            h = np.maximum(h, 0.0)
    return {
        "kernels": "|N(0,1)|" if nonnegative else "N(0,1)", "layers": num_layers,
        "dilations": dil, "images": int(images.shape[0]), "draws": draws,
        "relu_vs_linear_rel_fro": float(np.mean(errors)),
        "relu_vs_linear_rel_fro_per_draw": errors,
        "relu_vs_linear_max_rel": float(np.max(max_errors)),
        "fraction_clipped_mean": float(np.mean(clipped)),
    }


def channel_case(rng, channels=4, size=3, extra=20):
    """C -> C kernels at dilations 1, 3: dense channel mixing vs factored channels."""
    c = channels
    split = int(round(np.sqrt(c)))
    if split * split != c:
        raise ValueError(f"channels must be a perfect square. Received {channels}")
    dil = [1, size]
    extent = size * size
    x = rng.standard_normal((extent + extra, extent + extra, c))
    out = {"channels": c, "channel_split": [split, split], "dilations": dil}
    # dense channel mixing
    k0, k1 = rng.standard_normal((2, size, size, c, c))
    w = kz.collapse([k0, k1], dil)
    paths = np.zeros_like(w)                      # W[:, :, c, o] = sum_m K1[m, o] (x) K0[c, m]
    for ci in range(c):
        for o in range(c):
            paths[:, :, ci, o] = sum(np.kron(k1[:, :, m, o], k0[:, :, ci, m]) for m in range(c))
    y = run_cascade(x, [k0, k1], dil)
    spatial_rank1 = [kronecker_errors(w[:, :, ci, o], (size, size), (size, size))[1]
                     for ci in range(c) for o in range(c)]
    kron4 = kronecker_errors(w, (size, size, split, split), (size, size, split, split))
    pair_ranks = [int(np.sum(np.array(kronecker_errors(w[:, :, ci, o], (size, size),
                                                       (size, size))) > 1e-12))
                  for ci in range(c) for o in range(c)]
    out["dense"] = {
        "collapse_vs_path_sum_max_abs": float(np.abs(w - paths).max()),
        "cascade_vs_one_conv_rel_max": float(np.abs(y - correlate(x, w)).max() / np.abs(y).max()),
        "best_4d_kronecker_rank1_rel_error": kron4[1],
        "best_4d_kronecker_rel_errors": kron4,
        "kronecker_rank_4d": int(np.sum(np.array(kron4) > 1e-12)),
        "per_channel_pair_spatial_kronecker_rank_max": max(pair_ranks),
        "per_channel_pair_spatial_kronecker_rank1_rel_error_mean": float(np.mean(spatial_rank1)),
        "per_channel_pair_spatial_kronecker_rank1_rel_error_min": float(np.min(spatial_rank1)),
    }
    # factored channels: K1 = F1 (x) I (outer channel index), K0 = I (x) F0 (inner index)
    f0, f1 = rng.standard_normal((2, size, size, split, split))
    eye = np.eye(split).reshape(1, 1, split, split)
    k0f, k1f = np.kron(eye, f0), np.kron(f1, eye)
    wf = kz.collapse([k0f, k1f], dil)
    target = np.kron(f1, f0)                      # 4-D np.kron: every axis, F1 outermost
    yf = run_cascade(x, [k0f, k1f], dil)
    out["factored"] = {
        "collapse_vs_kron_max_abs": float(np.abs(wf - target).max()),
        "collapse_vs_kron_rel_fro": _rel(wf - target, target),
        "kz_kron_vs_np_kron_max_abs": float(np.abs(kz.kron(f1, f0) - target).max()),
        "cascade_vs_one_conv_rel_max": float(
            np.abs(yf - correlate(x, target)).max() / np.abs(yf).max()),
    }
    return out


# -- figures ---------------------------------------------------------------------------


def _kernel_figure(path, exact_kernel, overlap):
    from experiments.figures import new_figure

    n = overlap["collapsed_extent"]
    splits = overlap["best_kronecker_rel_errors"]
    first = next(iter(splits))
    p = int(first.split("x")[0])
    from experiments.kronecker_expressivity import nearest_kronecker

    approx = nearest_kronecker(overlap["collapsed"], (p, p), (n // p, n // p), rank=1)[-1]
    panels = [
        ("exact: 3x3 at dilations 1, 3, 9\ncollapse == K2 (x) K1 (x) K0 (27x27)", exact_kernel),
        ("overlap: 3x3 at dilations 1, 2, 4\ncollapsed kernel (15x15)", overlap["collapsed"]),
        (f"best rank-1 Kronecker {first}\nrel. error {splits[first][1]:.2f}", approx),
        ("K2 (x) K1 (x) K0 (27x27): what the\nidentity would give; not the 15x15",
         overlap["naive_kron"]),
    ]
    fig = new_figure((13, 3.9))
    axes = fig.subplots(1, len(panels))
    for ax, (title, k) in zip(axes, panels):
        m = float(np.abs(k).max()) or 1.0
        ax.imshow(k, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Collapsed kernels of 3-layer 3x3 cascades (same random kernels)")
    fig.savefig(path, dpi=100)


def _error_figure(path, bars):
    from experiments.figures import new_figure

    fig = new_figure((11, 5))
    ax = fig.subplots()
    labels = [b[0] for b in bars]
    values = [max(b[1], TINY_FLOOR) for b in bars]
    colors = ["tab:green" if b[2] else "tab:red" for b in bars]
    ax.barh(range(len(bars)), values, color=colors)
    for i, b in enumerate(bars):
        ax.text(values[i] * 1.3, i, f"{b[1]:.1e}", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(TINY_FLOOR / 2, 30)
    ax.axvline(1e-10, color="k", ls=":", lw=1)
    ax.set_xlabel("relative error (log scale, exact 0 drawn at 1e-17; "
                  "green: identity holds, red: it does not)")
    ax.set_title("Dilated cascade vs one Kronecker-kernel convolution, float64")
    ax.grid(True, axis="x", which="major", alpha=0.3)
    fig.savefig(path, dpi=100)


# -- driver ----------------------------------------------------------------------------


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def run(out_dir, tiny=False, seed=0):
    """Run all cases, write ``cascade_identity.json`` and two PNGs into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    configs = [(2, 2), (3, 2), (4, 2), (2, 3), (3, 3), (4, 3)]
    exact = [exact_case(a, n, rng, extra=7 if tiny else 31) for a, n in configs]

    draws = 3 if tiny else 20
    overlaps = [overlap_case(rng, extra=7 if tiny else 31) for _ in range(draws)]
    first_split = next(iter(overlaps[0]["best_kronecker_rel_errors"]))
    splits = list(overlaps[0]["best_kronecker_rel_errors"])
    overlap_summary = {
        "draws": draws, "collapsed_extent": overlaps[0]["collapsed_extent"],
        "naive_kron_extent": overlaps[0]["naive_kron_extent"],
        "cascade_vs_collapse_rel_max": max(o["cascade_vs_collapse_rel_max"] for o in overlaps),
        "collapsed_vs_naive_kron_rel_fro_mean": float(
            np.mean([o["collapsed_vs_naive_kron_rel_fro"] for o in overlaps])),
        "control_dilations_3l_rank1_rel_error_max": max(
            o["control_dilations_3l_rank1_rel_error"] for o in overlaps),
        "best_kronecker": {
            s: {"rank1_rel_error_mean": float(np.mean(
                    [o["best_kronecker_rel_errors"][s][1] for o in overlaps])),
                "rank1_rel_error_min": float(np.min(
                    [o["best_kronecker_rel_errors"][s][1] for o in overlaps])),
                "rel_errors_by_rank_draw0": overlaps[0]["best_kronecker_rel_errors"][s]}
            for s in splits},
    }

    from kronecker_zoo.data import fashion_mnist

    images = fashion_mnist("test")[0][: 8 if tiny else 200, :, :, 0].astype(np.float64) / 255.0
    relu = [relu_case(images, rng, 3, n, nonneg, draws=1 if tiny else 5)
            for n in (2, 3) for nonneg in (False, True)]
    channels = channel_case(rng, channels=4, extra=4 if tiny else 20)

    exact_max = max(max(e["collapse_vs_kron_max_abs"], e["kron_vs_np_kron_max_abs"],
                        e["cascade_vs_one_conv_max_rel"]) for e in exact)
    relu_gauss = [r for r in relu if r["kernels"] == "N(0,1)"]
    finding = (
        f"Exact case holds to float64 round-off for a = 2, 3, 4 and L = 2, 3 (max error "
        f"{exact_max:.1e}); factor order matters: K_{{L-1}} (x) ... (x) K_0, the last layer "
        f"outermost (reversed order: relative error "
        f"{min(e['wrong_order_rel_fro'] for e in exact):.2f} or more). Overlapping taps "
        f"(3x3 at 1, 2, 4): the cascade is still one conv (15x15, error "
        f"{overlap_summary['cascade_vs_collapse_rel_max']:.0e}) but not a Kronecker product: "
        f"best rank-1 Kronecker {first_split} relative error "
        f"{overlap_summary['best_kronecker'][first_split]['rank1_rel_error_mean']:.2f} "
        f"(mean of {draws} draws). ReLU between layers (N(0,1) kernels, Fashion-MNIST): "
        f"mean relative error " + ", ".join(
            f"{r['relu_vs_linear_rel_fro']:.2f} (L={r['layers']})" for r in relu_gauss)
        + " vs the linear collapse "
        f"(0 for non-negative kernels on non-negative images: the ReLU never fires). "
        f"C = 4 channels: the cascade is one conv with a sum over channel paths (error "
        f"{channels['dense']['collapse_vs_path_sum_max_abs']:.0e}); with dense channel "
        f"mixing it is far from a 4-D Kronecker product (rank-1 error "
        f"{channels['dense']['best_4d_kronecker_rank1_rel_error']:.2f}), with factored "
        f"channel mixing it is exactly F1 (x) F0 (error "
        f"{channels['factored']['collapse_vs_kron_max_abs']:.0e}).")
    result = {
        "claim": ("Seed note: a cascade of a x a kernels at dilations 1, a, ..., a^(L-1) without "
                  "nonlinearity equals one convolution with K_{L-1} (x) ... (x) K_0; it stops "
                  "holding with overlapping taps, nonlinearities, or general channel mixing."),
        "finding": finding,
        "tiny": bool(tiny), "seed": seed, "dtype": "float64",
        "exact": exact,
        "overlap": overlap_summary,
        "relu": relu,
        "channels": channels,
    }
    bars = [(f"exact a={e['a']}, L={e['layers']}: cascade vs kron conv (max rel)",
             e["cascade_vs_one_conv_max_rel"], True) for e in exact]
    bars += [
        ("overlap 1,2,4: cascade vs collapsed 15x15 conv",
         overlap_summary["cascade_vs_collapse_rel_max"], True),
        (f"overlap 1,2,4: best rank-1 Kronecker {first_split} (kernel)",
         overlap_summary["best_kronecker"][first_split]["rank1_rel_error_mean"], False),
        ("overlap 1,2,4: collapsed vs K2 (x) K1 (x) K0 (kernel)",
         overlap_summary["collapsed_vs_naive_kron_rel_fro_mean"], False),
    ]
    bars += [(f"ReLU, {r['kernels']} kernels, L={r['layers']}: vs linear (output)",
              r["relu_vs_linear_rel_fro"], r["relu_vs_linear_rel_fro"] < 1e-10) for r in relu]
    bars += [
        ("C=4 dense mixing: cascade vs path-sum conv",
         channels["dense"]["cascade_vs_one_conv_rel_max"], True),
        ("C=4 dense mixing: best rank-1 4-D Kronecker (kernel)",
         channels["dense"]["best_4d_kronecker_rank1_rel_error"], False),
        ("C=4 factored mixing: collapse vs F1 (x) F0 (kernel)",
         channels["factored"]["collapse_vs_kron_rel_fro"], True),
    ]
    exact_kernel = kz.collapse(overlaps[0]["kernels"], [1, 3, 9])
    figs = [f"{NAME}_kernels.png", f"{NAME}_errors.png"]
    _kernel_figure(os.path.join(out_dir, figs[0]), exact_kernel, overlaps[0])
    _error_figure(os.path.join(out_dir, figs[1]), bars)
    result["figures"] = figs
    result = _jsonable(result)
    return write_json(out_dir, NAME, result)


main = command(__doc__, NAME, run)


if __name__ == "__main__":
    main()
