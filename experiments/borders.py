"""Border effects: per-pixel error vs distance to the image border, per model and padding.

The seed note says dilated convolutions are translation-equivariant "away from
borders" and leaves open how much the border costs. Here: the published
``fashion_scenes`` segmentation models (``pool_segnet`` = pooling encoder-decoder,
``dilated_fcn`` and ``context_net`` = dilated, ``kron_context_net`` = Kronecker; models
without published weights are listed in ``left_out``) on real test scenes, with

* ``pixel_error`` = 1 - pixel accuracy and ``cross_entropy`` (nats, softmax of the
  logits against the true class), per distance ``d = 0..31`` of a pixel to the nearest
  image border (``border_distance``: ``min(i, j, h-1-i, w-1-j)``);
* ``foreground_fraction``: share of ground-truth foreground pixels at each distance
  (composed scenes hold fewer items near the border, so raw error vs distance mixes a
  class-mix effect into the padding effect).

Padding modes (what each model was given at its borders):

* ``zeros``: as trained (every layer zero-pads, "same").
* ``reflect`` / ``symmetric``: rebuilt from the same config and weights with
  ``padding_mode`` changed on every layer that has one: only ``KroneckerConv2D``
  (``kron_context_net``: ``context_2``, ``context_3``, ``context_4``, extents 9, 27, 27 on
  the stride-2 maps); Keras ``Conv2D`` / ``MaxPooling2D`` (all other layers and models)
  have no such option, so other models get no layer-level mirrored mode.
* ``input_reflect`` (client side, every model): the image is mirrored by
  ``INPUT_REFLECT`` = 32 pixels on each side, predicted, and cropped back.
* ``input_background`` (client side, crops only): the image in a background (0)
  canvas beyond the receptive field: the right padding *value* for these scenes,
  without the true surroundings (for ``scenes`` it is identical to ``no_border``).
* ``no_border`` (reference): the image sits in a background (0) canvas with a margin
  ``>=`` receptive-field radius + 2, so no pixel's receptive field reaches a padded
  border. For composed scenes this is the truth (the scene *is* background beyond its
  edge); ``zeros - no_border`` at a distance is the pure cost of the border, at the
  same pixels and labels.

Two scenarios: ``scenes`` (the 64x64 test scenes the models were trained on: items lie
fully inside) and ``crops`` (the central 64x64 of 96x96 test scenes with 4-9 items,
about the same item density: items are cut by the border; the ``no_border`` reference
then sees the true surroundings, the full 96x96 scene in a background canvas).
All margins and crop offsets are multiples of 4, so the pooling grid phase is the same
in every mode.

    python experiments/borders.py --out docs/experiments [--tiny] [--scenes N]
"""

import os
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments.common import command, write_json  # noqa: E402
from kronecker_zoo.metrics import confusion_matrix, mean_iou_from_confusion  # noqa: E402
from experiments.translation_equivariance import (  # noqa: E402
    COLORS,
    _figure,
    embed,
    margin_for,
    model_facts,
    published_segmentation_models,
)

NAME = "borders"
WEIGHTS = "fashion_scenes"
TINY_MODELS = ("pool_segnet_small", "kron_context_net_basic")
FULL_SCENES = 160
TINY_SCENES = 2
SIZE = 64
CROP_CANVAS = 96
CROP_ITEMS = (4, 9)  # ~ the item density of 2-4 items on 64x64
CROP_OFFSET = (CROP_CANVAS - SIZE) // 2
INPUT_REFLECT = 32
LAYER_MODES = ("reflect", "symmetric")
MODES = ("zeros", "reflect", "symmetric", "input_reflect", "input_background", "no_border")
MODE_STYLE = {"zeros": ("black", "-"), "reflect": ("tab:orange", "-"),
              "symmetric": ("gold", "--"), "input_reflect": ("tab:blue", "--"),
              "input_background": ("tab:cyan", "-."),
              "no_border": ("tab:green", ":")}
BAND = 4        # "border band": distances 0..BAND-1
INTERIOR = 16   # "interior": distances >= INTERIOR
BATCH = 32


# -- pure NumPy -----------------------------------------------------------------------
def border_distance(h, w):
    """``(h, w)`` ints: distance of each pixel to the nearest image border (0 on the edge)."""
    i = np.arange(h)[:, None]
    j = np.arange(w)[None, :]
    return np.minimum(np.minimum(i, h - 1 - i), np.minimum(j, w - 1 - j)).astype(np.int64)


def foreground_by_distance(masks):
    """Share of foreground (label > 0) pixels at each border distance of ``masks`` (N, h, w)."""
    masks = np.asarray(masks)
    d = np.broadcast_to(border_distance(*masks.shape[1:3]), masks.shape).reshape(-1)
    fg = np.bincount(d, weights=(masks > 0).reshape(-1).astype(np.float64))
    return fg / np.bincount(d)


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


class DistanceStats:
    """Accumulates per-distance pixel error, cross-entropy and foreground share."""

    KEYS = ("count", "errors", "cross_entropy", "foreground", "fg_errors", "bg_errors")

    def __init__(self, h, w, num_classes):
        self.distance = border_distance(h, w)
        self.bins = int(self.distance.max()) + 1
        self.num_classes = num_classes
        self.sums = {k: np.zeros(self.bins) for k in self.KEYS}
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def add(self, logits, masks):
        logits = np.asarray(logits)
        masks = np.asarray(masks).astype(np.int64)
        pred = logits.argmax(-1)
        wrong = (pred != masks).astype(np.float64)
        ce = -np.take_along_axis(log_softmax(logits), masks[..., None], -1)[..., 0]
        fg = (masks > 0).astype(np.float64)
        d = np.broadcast_to(self.distance, masks.shape).reshape(-1)
        for key, weights in (("count", np.ones_like(wrong)), ("errors", wrong),
                             ("cross_entropy", ce), ("foreground", fg),
                             ("fg_errors", wrong * fg), ("bg_errors", wrong * (1 - fg))):
            self.sums[key] += np.bincount(d, weights=weights.reshape(-1), minlength=self.bins)
        self.confusion += confusion_matrix(masks, pred, self.num_classes)

    def summary(self):
        s = self.sums
        count = np.maximum(s["count"], 1)
        fg = s["foreground"]
        bg = s["count"] - fg
        out = {
            "pixel_error": s["errors"] / count,
            "cross_entropy": s["cross_entropy"] / count,
            "foreground_fraction": fg / count,
            "fg_pixel_error": np.where(fg > 0, s["fg_errors"] / np.maximum(fg, 1), np.nan),
            "bg_pixel_error": np.where(bg > 0, s["bg_errors"] / np.maximum(bg, 1), np.nan),
            "pixels": s["count"],
        }
        out = {k: [None if np.isnan(v) else float(v) for v in arr] for k, arr in out.items()}
        out["pixels"] = [int(v) for v in s["count"]]
        total = s["count"].sum()
        out["accuracy"] = float(1 - s["errors"].sum() / total)
        out["miou"] = mean_iou_from_confusion(self.confusion)
        out["mean_cross_entropy"] = float(s["cross_entropy"].sum() / total)
        for key, sel in (("band", slice(0, BAND)), ("interior", slice(INTERIOR, None))):
            n = s["count"][sel].sum()
            out[f"pixel_error_{key}"] = float(s["errors"][sel].sum() / n) if n else None
            out[f"cross_entropy_{key}"] = float(s["cross_entropy"][sel].sum() / n) if n else None
        out["pixel_error_edge"] = out["pixel_error"][0]
        return out


# -- models ---------------------------------------------------------------------------
def with_padding_mode(model, mode):
    """``model`` rebuilt with ``padding_mode=mode`` on every layer that has the option,
    same weights. Returns ``(model, [names of the changed layers])``."""
    import keras

    config = model.get_config()
    changed = []
    for layer in config["layers"]:
        if "padding_mode" in layer["config"]:
            layer["config"]["padding_mode"] = mode
            changed.append(layer["config"]["name"])
    if not changed:
        return model, []
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt, changed


def padding_mode_layers(name):
    """Names of the layers of ``name`` that support ``padding_mode``."""
    from kronecker_zoo import models

    return with_padding_mode(models.get(name), "reflect")[1]


def predictor(name, padding_mode="zeros", weights=WEIGHTS):
    """``predict(x)`` with the published model built for ``x``'s size (one fixed-shape
    model per size; see translation_equivariance.published_predictor) and
    ``padding_mode`` on the layers that support it."""
    from kronecker_zoo import models

    cache = {}

    def predict(x):
        key = tuple(x.shape[1:])
        if key not in cache:
            model = models.get(name, weights=weights, input_shape=key)
            if padding_mode != "zeros":
                model = with_padding_mode(model, padding_mode)[0]
            cache[key] = model
        return cache[key].predict(np.asarray(x, np.float32), batch_size=BATCH, verbose=0)

    return predict


def mode_logits(predict, mode, images, margin, context=None, offset=(0, 0)):
    """Logits on the ``SIZE x SIZE`` ``images`` under an input-level ``mode``.

    ``zeros`` and the layer modes predict on ``images`` as they are; ``input_reflect``
    mirrors them by ``INPUT_REFLECT``; ``input_background`` embeds them in a background
    (0) canvas of ``margin``; ``no_border`` predicts on ``context`` (the larger
    image ``images`` were cut from at ``offset``; default: ``images`` themselves) in a
    background canvas of ``margin`` and crops.
    """
    h, w = images.shape[1:3]
    if mode == "input_reflect":
        r = INPUT_REFLECT
        padded = np.pad(np.asarray(images, np.float32), ((0, 0), (r, r), (r, r), (0, 0)),
                        mode="reflect")
        return predict(padded)[:, r:r + h, r:r + w]
    if mode == "input_background":
        mode, context, offset = "no_border", None, (0, 0)
    if mode == "no_border":
        context = images if context is None else context
        ch, cw = context.shape[1:3]
        canvas = embed(context, (ch + 2 * margin, cw + 2 * margin), (margin, margin))
        top, left = margin + offset[0], margin + offset[1]
        return predict(canvas)[:, top:top + h, left:left + w]
    return predict(np.asarray(images, np.float32))


# -- figures --------------------------------------------------------------------------
def _scenario_figure(path, scenario, title, results):
    models_ = list(scenario["models"])
    cols = 3 if len(models_) + 2 <= 9 else 4  # one panel per model, the fractions, the legend
    rows = -(-(len(models_) + 2) // cols)
    fig = _figure((4 * cols, 3.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    dist = results["distance"]
    for ax, name in zip(axes, models_):
        for mode, e in scenario["models"][name].items():
            color, ls = MODE_STYLE[mode]
            ax.plot(dist, e["pixel_error"], color=color, ls=ls, lw=1.6, label=mode)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("distance to border (px)")
        ax.set_ylabel("pixel error (1 - accuracy)")
        ax.grid(alpha=0.3)
    ax = axes[len(models_)]
    for key, sc in results["scenarios"].items():
        ax.plot(dist, sc["foreground_fraction"], lw=1.6,
                ls="-" if key == "scenes" else "--", label=key)
    ax.set_title("ground-truth foreground fraction", fontsize=10)
    ax.set_xlabel("distance to border (px)")
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    legend_ax = axes[len(models_) + 1]
    legend_ax.axis("off")
    for mode in MODES:
        color, ls = MODE_STYLE[mode]
        legend_ax.plot([], [], color=color, ls=ls, lw=1.6, label=mode)
    legend_ax.legend(loc="upper left", fontsize=9, title="padding mode")
    legend_ax.text(0.0, 0.0, "zeros: as trained\nreflect/symmetric: KroneckerConv2D\n"
                   "  padding_mode (kron_context_net)\ninput_reflect: image mirrored by "
                   f"{INPUT_REFLECT} px\ninput_background (crops): crop in a\n"
                   "  background canvas (the padding value 0)\nno_border: true surroundings"
                   " beyond\n  the receptive field (reference)", fontsize=8, va="bottom",
                   transform=legend_ax.transAxes)
    for ax in axes[len(models_) + 2:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def _line_style(name):
    """Models of one family (one colour) told apart: small / front end dashed or dotted."""
    for suffix, style in (("_small", "--"), ("_frontend", ":"), ("_large", "-.")):
        if name.endswith(suffix):
            return style
    return "-"


def _excess_figure(path, results):
    fig = _figure((12, 7.5))
    axes = fig.subplots(2, 2, squeeze=False)
    dist = results["distance"]
    for j, (key, sc) in enumerate(results["scenarios"].items()):
        for i, (metric, label) in enumerate((("pixel_error", "pixel error"),
                                             ("cross_entropy", "cross-entropy (nats)"))):
            ax = axes[i][j]
            for name, modes in sc["models"].items():
                family = results["models"][name]["family"]
                excess = np.subtract(modes["zeros"][metric], modes["no_border"][metric])
                ax.plot(dist, excess, color=COLORS.get(family, "black"), ls=_line_style(name),
                        lw=1.6, label=name)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_title(f"{key}: zeros - no_border ({label})", fontsize=10)
            ax.set_xlabel("distance to border (px)")
            ax.set_ylabel(f"excess {label}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Cost of the zero-padded border at the same pixels and labels "
                 "(positive = worse at the border than with the true surroundings)")
    fig.savefig(path, dpi=100)


# -- the experiment -------------------------------------------------------------------
def _range(values):
    values = [v for v in values if v is not None]
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f} to {hi:.3f}"


def _finding(results):
    sc, cr = results["scenarios"]["scenes"], results["scenarios"]["crops"]

    def band(scenario, mode, names=None):
        return [m[mode]["pixel_error_band"] for n, m in scenario["models"].items()
                if mode in m and (names is None or n in names)]

    interior = [m["zeros"]["pixel_error_interior"] for m in cr["models"].values()]
    parts = [
        f"Composed scenes: the border band (d<{BAND}) is {1 - _band_fg(sc):.1%} background, "
        f"so its error is tiny for every model and mode ({_range(band(sc, 'zeros'))} zero-"
        f"padded); the padding itself (zeros - no_border, d<{BAND}) costs "
        f"{_range([a - b for a, b in zip(band(sc, 'zeros'), band(sc, 'no_border'))])}",
        f"crops (items cut by the border, {_band_fg(cr):.0%} foreground at d<{BAND}): error "
        f"at d<{BAND} is {_range(band(cr, 'zeros'))} zero-padded vs "
        f"{_range(band(cr, 'no_border'))} with the true surroundings, while interior error "
        f"(d>={INTERIOR}) is {_range(interior)}",
        f"a background canvas (the right padding value, no surroundings) gives "
        f"{_range(band(cr, 'input_background'))}: " + (
            "the border cost is missing context, not the padding value"
            if np.mean(band(cr, "input_background")) >= np.mean(band(cr, "zeros")) - 0.01
            else "the padding value explains part of the border cost") +
        f"; mirroring the input by {INPUT_REFLECT} px gives {_range(band(cr, 'input_reflect'))}",
    ]
    kron = {n: m for n, m in cr["models"].items() if "reflect" in m}
    for name, m in kron.items():
        parts.append(f"{name} with KroneckerConv2D padding_mode reflect/symmetric (layers "
                     f"{', '.join(results['models'][name]['padding_mode_layers'])}): "
                     f"{m['reflect']['pixel_error_band']:.3f}/"
                     f"{m['symmetric']['pixel_error_band']:.3f} vs "
                     f"{m['zeros']['pixel_error_band']:.3f} zero-padded at d<{BAND} (crops)")
    for name, m in sc["models"].items():
        z, ref = m["zeros"]["pixel_error_interior"], m["no_border"]["pixel_error_interior"]
        if ref - z > 0.005:
            parts.append(f"{name} (receptive field {results['models'][name]['receptive_field']}"
                         f" > 64) is better with its trained zero border than in a background "
                         f"canvas even in the interior ({z:.3f} vs {ref:.3f}): it uses the border")
    return "; ".join(parts) + "."


def _band_fg(scenario):
    fg = np.asarray(scenario["foreground_fraction"][:BAND])
    px = np.asarray(scenario["pixels"][:BAND])
    return float((fg * px).sum() / px.sum())


def run(out_dir, tiny=False, num_scenes=None):
    from kronecker_zoo import data

    os.makedirs(out_dir, exist_ok=True)
    published, left_out = published_segmentation_models()
    names = TINY_MODELS if tiny else published
    n = num_scenes or (TINY_SCENES if tiny else FULL_SCENES)
    scenes, scene_masks = data.fashion_scenes("test")
    scenes, scene_masks = scenes[:n], scene_masks[:n]
    big, big_masks = data.fashion_scenes("test", num_scenes=n, canvas_size=CROP_CANVAS,
                                         items_per_scene=CROP_ITEMS)
    o = CROP_OFFSET
    crops, crop_masks = big[:, o:o + SIZE, o:o + SIZE], big_masks[:, o:o + SIZE, o:o + SIZE]
    scenarios = {"scenes": (scenes, scene_masks, None), "crops": (crops, crop_masks, big)}
    results = {"distance": list(range(SIZE // 2)), "scenarios": {}}
    layers, facts = {}, {}
    for name in names:
        facts[name] = model_facts(name)
        facts[name]["margin"] = margin_for(facts[name]["receptive_field"])
        layers[name] = padding_mode_layers(name)
    predictors = {}  # (name, padding_mode) -> predictor, shared by the scenarios
    for key, (images, masks, context) in scenarios.items():
        sc = {"models": {}}
        for name in names:
            modes = ["zeros"] + (list(LAYER_MODES) if layers[name] else []) + [
                "input_reflect"] + (["input_background"] if context is not None else []) + [
                "no_border"]
            sc["models"][name] = {}
            for mode in modes:
                layer_mode = mode if mode in LAYER_MODES else "zeros"
                if (name, layer_mode) not in predictors:
                    predictors[name, layer_mode] = predictor(name, layer_mode)
                predict = predictors[name, layer_mode]
                stats = DistanceStats(SIZE, SIZE, 11)
                for start in range(0, n, 64):
                    part = slice(start, min(start + 64, n))
                    logits = mode_logits(predict, mode, images[part], facts[name]["margin"],
                                         None if context is None else context[part],
                                         (0, 0) if context is None else (o, o))
                    stats.add(logits, masks[part])
                sc["models"][name][mode] = stats.summary()
        sc["foreground_fraction"] = foreground_by_distance(masks).tolist()
        sc["pixels"] = [int(v) for v in np.bincount(
            np.broadcast_to(border_distance(SIZE, SIZE), masks.shape).reshape(-1))]
        results["scenarios"][key] = sc
    results.update({
        "claim": ("Dilated convolutions are translation-equivariant only away from the "
                  "borders (seed note); open question: how much do zero-padded borders "
                  "cost, per architecture and padding mode?"),
        "config": {
            "models": list(names), "weights": WEIGHTS, "split": "test",
            "num_scenes": int(n),
            "scenes": f"the first {n} of fashion_scenes('test') (64x64, 2-4 items)",
            "crops": (f"central {SIZE}x{SIZE} (offset {o}) of fashion_scenes('test', "
                      f"num_scenes={n}, canvas_size={CROP_CANVAS}, items_per_scene="
                      f"{CROP_ITEMS})"),
            "input_reflect_pixels": INPUT_REFLECT,
            "band": f"distance < {BAND}", "interior": f"distance >= {INTERIOR}",
            "left_out": left_out,
            "tiny": bool(tiny),
        },
        "models": {name: dict(facts[name], padding_mode_layers=layers[name])
                   for name in names},
        "padding_modes": {
            "zeros": "as trained: every layer zero-pads ('same')",
            "reflect": "KroneckerConv2D padding_mode='reflect' (only layers with the option)",
            "symmetric": "KroneckerConv2D padding_mode='symmetric'",
            "input_reflect": f"image mirrored by {INPUT_REFLECT} px, prediction cropped",
            "input_background": ("crops only: the crop in a background (0) canvas with margin "
                                 ">= receptive-field radius + 2 (for scenes this is no_border)"),
            "no_border": ("image in a background canvas with margin >= receptive-field "
                          "radius + 2 (crops: the full 96x96 scene), prediction cropped: "
                          "the reference without border"),
        },
    })
    results["finding"] = _finding(results)
    write_json(out_dir, NAME, results)  # the numbers are kept even if a figure fails
    figs = [f"{NAME}_scenes.png", f"{NAME}_crops.png", f"{NAME}_excess.png"]
    _scenario_figure(os.path.join(out_dir, figs[0]), results["scenarios"]["scenes"],
                     f"Pixel error vs distance to the border: {n} composed 64x64 test scenes "
                     "(items inside the image)", results)
    _scenario_figure(os.path.join(out_dir, figs[1]), results["scenarios"]["crops"],
                     f"Pixel error vs distance to the border: {n} central 64x64 crops of "
                     "96x96 test scenes (items cut by the border)", results)
    _excess_figure(os.path.join(out_dir, figs[2]), results)
    results["figures"] = figs
    return write_json(out_dir, NAME, results)


main = command(__doc__, NAME, run, scenes=(FULL_SCENES, TINY_SCENES))


if __name__ == "__main__":
    main()
