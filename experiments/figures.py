"""PNG figures redrawing the seed note's lost pictures.

* :func:`kronecker_kernel_gallery`: random 27x27 Kronecker kernels (three 3x3
  factors), fractal self-products ``K (x) K (x) K`` and rank-1 kernels ``u v^T``.
* :func:`receptive_field_growth`: receptive field and parameter count vs depth
  for plain, exponentially dilated (Yu & Koltun) and Kronecker (dilations 3^l)
  stacks of 3x3 convolutions.

The numbers come from pure-NumPy helpers (:func:`gallery_factors`,
:func:`gallery_kernels`, :func:`receptive_field_table`); matplotlib is imported
only when drawing, through its object-oriented API (no global backend is set);
:func:`new_figure` is the canvas every experiment draws on.

    python experiments/figures.py docs/figures     # writes both PNGs (README's pictures)
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from kronecker_zoo.kernels import kron, receptive_field  # noqa: E402

KERNELS_PNG = "kronecker_kernels.png"
RECEPTIVE_FIELD_PNG = "receptive_field_growth.png"

PATTERNS = {
    "Sierpinski carpet": np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float),
    "cross": np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=float),
    "X": np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=float),
}


def gallery_factors(seed=0):
    """The random factors behind :func:`gallery_kernels` (standard normal draws).

    Returns a dict: ``"kronecker"``: three lists of three 3x3 factors;
    ``"kronecker_9"``: two 3x3 factors; ``"rank1_27"`` / ``"rank1_9"``: ``(u, v)``
    vector pairs of length 27 / 9; ``"patterns"``: the binary 3x3 :data:`PATTERNS`.
    """
    rng = np.random.default_rng(seed)
    return {
        "kronecker": [[rng.standard_normal((3, 3)) for _ in range(3)] for _ in range(3)],
        "kronecker_9": [rng.standard_normal((3, 3)) for _ in range(2)],
        "rank1_27": (rng.standard_normal(27), rng.standard_normal(27)),
        "rank1_9": (rng.standard_normal(9), rng.standard_normal(9)),
        "patterns": {name: p.copy() for name, p in PATTERNS.items()},
    }


def gallery_kernels(seed=0):
    """The gallery's panels as ``{row: [(title, kernel, n_params), ...]}``.

    Rows: ``"kronecker"`` (3 random 27x27 kernels ``kron(A, B, C)``, 27 params);
    ``"fractal"`` (``kron(P, P, P)`` for each binary pattern, 9 shared params);
    ``"rank1"`` (a 27x27 ``u v^T``, 54 params, then at equal budget a 9x9
    ``kron(A, B)`` and a 9x9 ``u v^T``, 18 params each).
    """
    f = gallery_factors(seed)
    rows = {"kronecker": [], "fractal": [], "rank1": []}
    for i, factors in enumerate(f["kronecker"]):
        rows["kronecker"].append((f"random 3x3 (x) 3x3 (x) 3x3 #{i + 1}", kron(*factors), 27))
    for name, p in f["patterns"].items():
        rows["fractal"].append((f"{name}: K (x) K (x) K", kron(p, p, p), 9))
    u, v = f["rank1_27"]
    rows["rank1"].append(("rank-1 u v^T", np.outer(u, v), 54))
    rows["rank1"].append(("Kronecker 3x3 (x) 3x3", kron(*f["kronecker_9"]), 18))
    u, v = f["rank1_9"]
    rows["rank1"].append(("rank-1 u v^T", np.outer(u, v), 18))
    return rows


def receptive_field_table(max_depth=8, kernel_size=3):
    """Receptive fields and parameter counts of three stacks, for depths ``1..max_depth``.

    Computed with :func:`kronecker_zoo.kernels.receptive_field`. Keys: ``"depth"``;
    ``"plain"`` (all dilations 1), ``"dilated"`` (dilations ``1, 2, 4, ...``),
    ``"kronecker"`` (dilations ``1, k, k**2, ...``): receptive fields in pixels;
    ``"params"``: ``k*k*L`` weights per channel pair, the same for all three;
    ``"dense_<stack>"``: ``rf**2``, the weights of one dense kernel of that extent.
    """
    if int(max_depth) != max_depth or max_depth < 1:
        raise ValueError(f"`max_depth` must be a positive int. Received: {max_depth!r}")
    if int(kernel_size) != kernel_size or kernel_size < 2:
        raise ValueError(f"`kernel_size` must be an int >= 2. Received: {kernel_size!r}")
    k = int(kernel_size)
    depths = list(range(1, int(max_depth) + 1))
    bases = {"plain": 1, "dilated": 2, "kronecker": k}  # layer i has dilation base**i
    table = {"depth": depths, "params": [k * k * d for d in depths]}
    for name, base in bases.items():
        table[name] = [receptive_field([k] * d, [base**i for i in range(d)]) for d in depths]
        table[f"dense_{name}"] = [rf * rf for rf in table[name]]
    return table


def new_figure(figsize):
    """A matplotlib Figure with an Agg canvas attached (no pyplot, no global backend)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "Drawing figures needs matplotlib to draw figures: "
            "pip install matplotlib"
        ) from err
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def kronecker_kernel_gallery(path, seed=0):
    """Write a 3x3 grid of kernel images (rows of :func:`gallery_kernels`) to ``path``.

    Random kernels use a diverging colormap centred at 0; binary fractals use
    black on white. Each title gives the extent and the parameter count.
    Returns ``path``.
    """
    rows = gallery_kernels(seed)
    labels = {"kronecker": "Kronecker (27 params)", "fractal": "fractal self-products",
              "rank1": "rank-1 vs Kronecker"}
    fig = new_figure((10, 11))
    axes = fig.subplots(len(rows), 3)
    for r, (row, panels) in enumerate(rows.items()):
        for c, (title, kernel, n_params) in enumerate(panels):
            ax = axes[r, c]
            if row == "fractal":
                ax.imshow(kernel, cmap="binary", vmin=0, vmax=1, interpolation="nearest")
            else:
                m = float(np.abs(kernel).max()) or 1.0
                ax.imshow(kernel, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
            h, w = kernel.shape
            ax.set_title(f"{title}\n{h}x{w}, {n_params} params", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(labels[row])
    fig.suptitle("Kronecker-factored vs rank-1 convolution kernels")
    fig.savefig(path, dpi=100)
    return path


def receptive_field_growth(path, max_depth=8, kernel_size=3):
    """Write receptive field vs depth (left) and dense-equivalent vs actual parameters
    (right), both log-scale, for the stacks of :func:`receptive_field_table`.
    Returns ``path``."""
    t = receptive_field_table(max_depth, kernel_size)
    k = int(kernel_size)
    names = {"plain": f"plain {k}x{k} stack", "dilated": "dilated 1, 2, 4, ... (Yu & Koltun)",
             "kronecker": f"Kronecker (dilated 1, {k}, {k * k}, ...)"}
    fig = new_figure((11, 4.5))
    ax_rf, ax_p = fig.subplots(1, 2)
    for (name, label), marker in zip(names.items(), "osD"):
        ax_rf.plot(t["depth"], t[name], marker=marker, label=label)
        ax_p.plot(t["depth"], t[f"dense_{name}"], marker=marker, label=f"dense, extent of {name}")
    ax_p.plot(t["depth"], t["params"], "k--", marker="x", label=f"actual ({k}*{k}*L, all stacks)")
    ax_rf.set(yscale="log", xlabel="depth L", ylabel="receptive field (pixels)",
              title="Receptive field vs depth")
    ax_p.set(yscale="log", xlabel="depth L", ylabel="weights per channel pair",
             title="Dense-equivalent parameters vs actual")
    for ax in (ax_rf, ax_p):
        ax.set_xticks(t["depth"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    return path


def write_all(directory):
    """Write both figures into ``directory`` (created if missing) and return their paths.

    The folder is a figure output folder: the fixed names ``kronecker_kernels.png``
    and ``receptive_field_growth.png`` are overwritten; nothing else is touched.
    """
    os.makedirs(directory, exist_ok=True)
    return [
        kronecker_kernel_gallery(os.path.join(directory, KERNELS_PNG)),
        receptive_field_growth(os.path.join(directory, RECEPTIVE_FIELD_PNG)),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the seed note's figures as PNG files.")
    parser.add_argument("directory", help="output folder (created if missing)")
    for path in write_all(parser.parse_args(argv).directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
