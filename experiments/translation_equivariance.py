"""Translation equivariance of the published segmentation models (the seed note's last section).

The seed note: dilated convolutions are translation-equivariant, "a property that
other multi-scale architectures often violate" (pooling encoder-decoders). Here we
measure it on real test scenes with the published ``fashion_scenes`` weights:

* ``dilated_fcn_small`` / ``_base``: no pooling, no striding (total stride 1);
* ``pool_segnet_small`` / ``_base``: two 2x2 max-poolings (total stride 4);
* the published ``context_net`` / ``kron_context_net`` models: stride-2 front end (total
  stride 2).

Every segmentation model with published ``fashion_scenes`` weights is measured; models
without published weights are listed in the result's ``left_out``.

Protocol. Each 64x64 test scene is embedded in a larger zero canvas (0 is the scene
background, so nothing is lost): once at offset ``(P, P)`` and once at ``(P + dy,
P + dx)`` for shifts ``s = 1..8`` horizontally ``(0, s)``, vertically ``(s, 0)`` and
diagonally ``(s, s)``. The canvas is ``64 + 8 + 2P`` pixels wide with the margin
``P >= receptive-field radius + 2`` (rounded up to a multiple of 4), so every
compared pixel is farther from the canvas border than the model can see: what is
measured is the architecture, not the border. The prediction on the shifted input
is read at the shifted scene position and compared with the unshifted prediction
on all 64x64 scene pixels:

(a) ``pixel_fraction``: fraction of pixels whose predicted class moves exactly with
    the input (``foreground_fraction``: the same on ground-truth foreground pixels
    only, ``scene_fraction``: scenes whose whole predicted map moves exactly);
(b) agreement: ``agreement_miou`` (mean IoU of the shifted prediction against the
    unshifted one) and the accuracy against the ground truth before/after the shift;
(c) ``max_rel_logit_diff``: max |logit difference| / max |logit| (``mean_rel_logit_diff``:
    mean |difference| / mean |logit|).

    python experiments/translation_equivariance.py --out docs/experiments [--tiny]
"""

import math
import os
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments.common import command, write_json  # noqa: E402

NAME = "translation_equivariance"
WEIGHTS = "fashion_scenes"
DIRECTIONS = {"horizontal": (0, 1), "vertical": (1, 0), "diagonal": (1, 1)}
SHIFTS = tuple(range(1, 9))
FULL_SCENES = 24
TINY_MODELS = ("dilated_fcn_small", "pool_segnet_small")
TINY_SCENES = 2
TINY_SHIFTS = (1, 2, 3, 4)
EXAMPLE_SHIFTS = (1, 2)  # diagonal shifts drawn in the example figure
COLORS = {"dilated_fcn": "tab:green", "pool_segnet": "tab:red", "context_net": "tab:blue",
          "kron_context_net": "tab:purple"}


def published_segmentation_models():
    """``(names with published fashion_scenes weights, {unpublished name: reason})``."""
    from kronecker_zoo import models

    published = tuple(models.list_models("segmentation", pretrained=True))
    left_out = {m: "no published weights" for m in models.list_models("segmentation")
                if m not in published}
    return published, left_out


# -- pure helpers -------------------------------------------------------------------
def embed(images, size, offset):
    """``images`` (N, h, w, c) placed at ``offset`` (row, col) in zero canvases of ``size``."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    canvas = np.zeros((n, size[0], size[1], c), np.float32)
    canvas[:, offset[0]:offset[0] + h, offset[1]:offset[1] + w] = images
    return canvas


def margin_for(receptive_field):
    """Canvas margin: receptive-field radius + 2, rounded up to a multiple of 4 (so
    the scene keeps the pooling grid phase of a 64x64 input)."""
    radius = int(receptive_field) // 2  # ceil((rf - 1) / 2): even fields are lopsided
    return 4 * math.ceil((radius + 2) / 4)


def total_stride(model):
    """Product of the strides of the strided layers (convolutions, poolings) of ``model``:
    shifts by multiples of it are where a pooling/striding network can be equivariant."""
    stride = 1
    for layer in model.layers:
        s = getattr(layer, "strides", None)
        if s is not None:
            s = tuple(s) if isinstance(s, (tuple, list)) else (s, s)
            stride *= max(int(v) for v in s)
    return stride


def _mean_iou(reference, predictions, num_classes):
    from kronecker_zoo.metrics import mean_iou
    return mean_iou(reference, predictions, num_classes)


def shift_consistency(predict, images, masks=None, shifts=SHIFTS, directions=None, margin=8):
    """Shift-consistency of ``predict`` (canvas batch (N, H, W, c) -> logits (N, H, W, K)).

    Returns ``{direction: {metric: [value per shift]}}`` plus ``"accuracy_original"``
    (when ``masks`` are given) and ``"logit_scale"``; see the module docstring for the
    metrics. Pixels compared: the ``h x w`` scene, at least ``margin`` pixels from the
    canvas border before and after the shift.
    """
    directions = dict(DIRECTIONS if directions is None else directions)
    images = np.asarray(images)
    n, h, w, _ = images.shape
    smax = max(shifts)
    size = (h + smax + 2 * margin, w + smax + 2 * margin)
    logits0 = np.asarray(predict(embed(images, size, (margin, margin))))
    logits0 = logits0[:, margin:margin + h, margin:margin + w]
    pred0 = logits0.argmax(-1)
    k = logits0.shape[-1]
    scale = float(np.abs(logits0).max())
    mean_scale = float(np.abs(logits0).mean())
    fg = None if masks is None else np.asarray(masks) > 0
    out = {"logit_scale": scale}
    if masks is not None:
        out["accuracy_original"] = float((pred0 == masks).mean())
    for dname, (uy, ux) in directions.items():
        rows = {key: [] for key in ("pixel_fraction", "foreground_fraction", "scene_fraction",
                                    "agreement_miou", "accuracy_shifted",
                                    "max_rel_logit_diff", "mean_rel_logit_diff")}
        for s in shifts:
            dy, dx = uy * s, ux * s
            logits = np.asarray(predict(embed(images, size, (margin + dy, margin + dx))))
            logits = logits[:, margin + dy:margin + dy + h, margin + dx:margin + dx + w]
            pred = logits.argmax(-1)
            same = pred == pred0
            diff = np.abs(logits - logits0)
            rows["pixel_fraction"].append(float(same.mean()))
            rows["foreground_fraction"].append(
                float(same[fg].mean()) if fg is not None and fg.any() else None)
            rows["scene_fraction"].append(float(same.reshape(n, -1).all(1).mean()))
            rows["agreement_miou"].append(_mean_iou(pred0, pred, k))
            rows["accuracy_shifted"].append(
                float((pred == masks).mean()) if masks is not None else None)
            rows["max_rel_logit_diff"].append(float(diff.max()) / max(scale, 1e-30))
            rows["mean_rel_logit_diff"].append(float(diff.mean()) / max(mean_scale, 1e-30))
        out[dname] = rows
    return out


# -- published models --------------------------------------------------------------
def published_predictor(name, weights=WEIGHTS, batch_size=16):
    """``predict(x)`` with the published model built for ``x``'s fixed spatial size.

    One fixed-shape model per size: a ``(None, None, 1)`` model with bilinear
    ``UpSampling2D`` fails in ``Model.predict`` at a second spatial size (the retraced
    graph has unknown height/width), and eager calls are slower.
    """
    from kronecker_zoo import models

    cache = {}

    def predict(x):
        key = tuple(x.shape[1:])
        if key not in cache:
            cache[key] = models.get(name, weights=weights, input_shape=key)
        return cache[key].predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0)

    return predict


def model_facts(name):
    from kronecker_zoo import models, report

    model = models.get(name)
    rf = report.parameter_report(model).receptive_field
    return {"receptive_field": int(max(rf)), "total_stride": total_stride(model),
            "family": models.registry.spec(name).family}


# -- figures ------------------------------------------------------------------------
def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(name, family):
    return {"color": COLORS.get(family, "black"),
            "linestyle": "--" if name.endswith(("_small",)) else "-",
            "marker": "o", "markersize": 3.5}


def _curves_figure(path, result, shifts):
    rows = (("pixel_fraction", "fraction of pixels\nmoving exactly (all)", "linear"),
            ("foreground_fraction", "fraction of pixels\nmoving exactly (foreground)", "linear"),
            ("max_rel_logit_diff", "max |logit diff|\n/ max |logit|", "log"))
    fig = _figure((12, 10))
    axes = fig.subplots(3, 3, sharex=True, squeeze=False)
    for j, dname in enumerate(DIRECTIONS):
        for i, (key, label, scale) in enumerate(rows):
            ax = axes[i][j]
            for name, entry in result["models"].items():
                values = entry[dname][key]
                if scale == "log":
                    values = [max(v, 1e-8) for v in values]
                ax.plot(shifts, values, label=f"{name} (stride {entry['total_stride']})",
                        **_style(name, entry["family"]))
            ax.set_yscale(scale)
            ax.grid(alpha=0.3)
            for m in (2, 4, 8):
                ax.axvline(m, color="grey", lw=0.6, alpha=0.4)
            if i == 0:
                uy, ux = DIRECTIONS[dname]
                ax.set_title(f"{dname} shift (dy, dx) = ({'s' if uy else 0}, {'s' if ux else 0})")
            if j == 0:
                ax.set_ylabel(label)
            if i == 2:
                ax.set_xlabel("shift s (pixels)")
                ax.set_xticks(list(shifts))
            if scale == "log":
                ax.axhline(1e-8, color="grey", lw=0.6, ls=":")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9)
    fig.suptitle(f"Shift consistency on {result['config']['num_scenes']} test scenes, interior "
                 "pixels only (farther from the canvas border than the receptive-field radius)"
                 "\nbottom row: 1e-8 marks an exact 0")
    fig.savefig(path, dpi=100)


def _example_figure(path, image, maps):
    names = list(maps)
    fig = _figure((2.0 * (len(names) + 1), 2.0 * len(EXAMPLE_SHIFTS) + 0.6))
    axes = fig.subplots(len(EXAMPLE_SHIFTS), len(names) + 1, squeeze=False)
    for i, s in enumerate(EXAMPLE_SHIFTS):
        axes[i][0].imshow(image, cmap="gray", vmin=0, vmax=255)
        axes[i][0].set_title("test scene" if i == 0 else "")
        axes[i][0].set_ylabel(f"diagonal shift ({s}, {s})")
        for j, name in enumerate(names, start=1):
            changed = maps[name][s]
            axes[i][j].imshow(image, cmap="gray", vmin=0, vmax=255, alpha=0.35)
            overlay = np.zeros(changed.shape + (4,))
            overlay[changed] = (1.0, 0.0, 0.0, 1.0)
            axes[i][j].imshow(overlay)
            axes[i][j].set_title(f"{name}\n{changed.mean():.1%} changed", fontsize=8)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("red: pixels whose predicted class does not move with the input")
    fig.savefig(path, dpi=100)


# -- the experiment -----------------------------------------------------------------
def _finding(models_result):
    parts = []
    for name, e in models_result.items():
        fr = {d: e[d]["pixel_fraction"] for d in DIRECTIONS}
        shifts = e["shifts"]
        exact = [s for i, s in enumerate(shifts) if all(fr[d][i] == 1.0 for d in DIRECTIONS)]
        worst = min(min(v) for v in fr.values())
        worst_fg = min(min(x for x in e[d]["foreground_fraction"] if x is not None)
                       for d in DIRECTIONS)
        acc = [x for d in DIRECTIONS for x in e[d]["accuracy_shifted"]]
        if len(exact) == len(shifts):
            parts.append(f"{name} (total stride {e['total_stride']}): exact at every shift "
                         f"s={shifts[0]}..{shifts[-1]} in every direction")
            continue
        parts.append(f"{name} (total stride {e['total_stride']}): exact at s={exact or 'none'}"
                     f", otherwise down to {worst:.3f} of all pixels ({worst_fg:.3f} of "
                     f"foreground pixels) moving with the input; accuracy "
                     f"{min(acc):.4f}-{max(acc):.4f} vs {e['accuracy_original']:.4f} unshifted")
    return ("Away from the border, shift-consistency is periodic in the total stride: "
            "exact (identical logits) for multiples of it, broken otherwise; "
            + "; ".join(parts) + ".")


def run(out_dir, tiny=False, num_scenes=None):
    from kronecker_zoo import data

    os.makedirs(out_dir, exist_ok=True)
    published, left_out = published_segmentation_models()
    names = TINY_MODELS if tiny else published
    shifts = TINY_SHIFTS if tiny else SHIFTS
    n = num_scenes or (TINY_SCENES if tiny else FULL_SCENES)
    images, masks = data.fashion_scenes("test")
    images, masks = images[:n], masks[:n]
    models_result = {}
    example_maps = {}
    for name in names:
        facts = model_facts(name)
        margin = margin_for(facts["receptive_field"])
        predict = published_predictor(name)
        entry = shift_consistency(predict, images, masks, shifts, margin=margin)
        entry.update(facts, margin=margin, canvas=64 + max(shifts) + 2 * margin,
                     shifts=list(shifts))
        models_result[name] = entry
        # example maps: scene 0, diagonal shifts
        size = (64 + max(EXAMPLE_SHIFTS) + 2 * margin,) * 2
        base = predict(embed(images[:1], size, (margin, margin)))
        base = base[0, margin:margin + 64, margin:margin + 64].argmax(-1)
        example_maps[name] = {}
        for s in EXAMPLE_SHIFTS:
            moved = predict(embed(images[:1], size, (margin + s, margin + s)))
            moved = moved[0, margin + s:margin + s + 64, margin + s:margin + s + 64].argmax(-1)
            example_maps[name][s] = moved != base
    result = {
        "claim": ("Dilated convolutions without pooling or striding are translation-"
                  "equivariant (seed note); pooling/striding networks are equivariant "
                  "only for shifts that are multiples of their total stride."),
        "config": {
            "models": list(names), "weights": WEIGHTS, "split": "test",
            "num_scenes": int(n), "scene_indices": f"0..{n - 1} of fashion_scenes('test')",
            "shifts": list(shifts), "directions": {k: list(v) for k, v in DIRECTIONS.items()},
            "left_out": left_out,
            "interior": ("all 64x64 scene pixels; the scene sits in a zero canvas with a "
                         "margin >= receptive-field radius + 2 on every side, before and "
                         "after the shift"),
            "tiny": bool(tiny),
        },
        "models": models_result,
    }
    result["finding"] = _finding(models_result)
    figs = [f"{NAME}.png", f"{NAME}_example.png"]
    _curves_figure(os.path.join(out_dir, figs[0]), result, list(shifts))
    _example_figure(os.path.join(out_dir, figs[1]), images[0, ..., 0], example_maps)
    result["figures"] = figs
    return write_json(out_dir, NAME, result)


main = command(__doc__, NAME, run, scenes=(FULL_SCENES, TINY_SCENES))


if __name__ == "__main__":
    main()
