"""Accuracy vs cost of the published Fashion-MNIST classifiers, and their Pareto fronts.

Every trained classifier family (``resnet``, ``kron_resnet``, ``lowrank_resnet``,
``separable_resnet``, ``drn``; depths 8 and 20) and every published student
(``<teacher>_kron<N>x[...]``, ``<teacher>_lowrank<N>x``: factorized from the dense
teacher and distilled, `kronecker_zoo.compress`) is one point, read from the
published manifest (``kronecker_zoo/weights/manifest.json``: test accuracy on the
full 10,000-image Fashion-MNIST test set, parameters, MACs, epochs). Costs:

* parameters and MACs per example (manifest; MACs count the execution that runs,
  so the Kronecker ResNets count their factored cascade);
* float32 TFLite latency (measured here, not deterministic): each model with its
  published weights is exported with `kronecker_zoo.export.to_tflite` (batch 1,
  Kronecker layers factored) and timed with `kronecker_zoo.export.benchmark_tflite`
  (LiteRT + XNNPACK, 1 thread), in interleaved rounds; each round gives the median
  of its timed invokes, and the point is the lowest of these per-round medians (the
  round least disturbed by other jobs on the shared machine; the median over rounds
  is kept in the JSON too). The timing runs in a separate process that loads only
  LiteRT (see `_TIMER`).

A second figure compares each model with its dense twin of the same depth
(``resnet_<depth>``, for a student its teacher): compression ``params_twin / params``
against the accuracy
change in points, with Zhou et al.'s (3.6x, "< 1% drop") and GKPD's (5x, -1.03
points, CIFAR-10) published points and the project's target region (>= 5x fewer
parameters at >= -1.0 point) shaded.

Budgets differ: the dense teachers ``resnet_8`` / ``resnet_20`` were trained 30 / 40
epochs with augmentation, the other ``_8`` families 10 epochs, ``kron_resnet_20`` only 4
(session budget; ``separable_resnet_20``, ``lowrank_resnet_20`` and ``drn_20`` 30 with the
teachers' recipe), the students 15 epochs of distillation from the
trained teacher. A low ``_20`` point is under-training, not a property of its family;
the figures mark the epochs of every point, the JSON also holds fronts computed within
each epoch budget, and the fair comparison of Kronecker against low rank is between the
students of the same teacher (same recipe, same budget).

    python experiments/pareto.py --out docs/experiments [--tiny] [--no-latency]
"""

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.common import parser, report, write_json  # noqa: E402

NAME = "pareto"
FAMILIES = ("resnet", "kron_resnet", "lowrank_resnet", "separable_resnet", "drn")
DEPTHS = (8, 20)
DATASET = "fashion_mnist"
TINY_MODELS = ("resnet_8", "kron_resnet_8", "lowrank_resnet_8", "resnet_8_kron5x")
COSTS = ("params", "macs", "latency_ms")
FILLED_EPOCHS = 10  # points trained fewer epochs are drawn hollow (under-trained)

# Published reference points (see /work/shared/reference/ANCHORS.md). Zhou et al. say
# "3.6x parameter reduction with less than 1% drop in accuracy": drawn as the
# boundary (3.6x, -1.0 point), reading "1%" as one accuracy point.
ANCHORS = {
    "zhou2015": {"label": "Zhou et al. 2015: 3.6x, < 1% drop", "compression": 3.6,
                 "accuracy_change_points": -1.0, "bound": True,
                 "source": "Zhou et al., Exploiting Local Structures with the Kronecker "
                           "Layer in CNNs (2015), abstract (SVHN, scene text, ImageNet)"},
    "gkpd2022": {"label": "GKPD 2022: 5x, -1.03 pt (CIFAR-10 ResNet-32)", "compression": 5.0,
                 "accuracy_change_points": -1.03, "bound": False,
                 "source": "Hameed et al., GKPD (AAAI 2022): ResNet-32 0.46M 92.55% vs "
                           "Kronecker ResNet-32 0.09M 91.52% on CIFAR-10"},
}
TARGET = {"min_compression": 5.0, "min_accuracy_change_points": -1.0}

STYLE = {  # family -> (colour, marker, short label)
    "resnet": ("#1f77b4", "o", "resnet"),
    "kron_resnet": ("#d62728", "*", "kron"),
    "lowrank_resnet": ("#2ca02c", "s", "lowrank"),
    "separable_resnet": ("#9467bd", "^", "separable"),
    "drn": ("#ff7f0e", "D", "drn"),
    "kron_student": ("#8b0000", "P", "kron student"),
    "lowrank_student": ("#006400", "X", "lowrank student"),
}
# `kronecker_zoo.compress` methods -> student family
STUDENT_FAMILY = {"kronecker": "kron_student", "lowrank": "lowrank_student"}
AXIS_LABELS = {"params": "parameters", "macs": "MACs per example",
               "latency_ms": "float32 TFLite latency, batch 1, 1 thread (ms, median per invoke)"}


# -- Pareto fronts (pure NumPy) ---------------------------------------------------


def pareto_front(cost, value):
    """Indices of the non-dominated points: lower ``cost`` and higher ``value`` are better.

    Point ``i`` is dominated when some ``j`` has ``cost[j] <= cost[i]`` and
    ``value[j] >= value[i]`` with at least one strict inequality. Identical points do
    not dominate each other (all copies stay on the front). O(n log n): sort by cost,
    keep the best value of each cost group, compare with the best of all cheaper groups.

    Returns:
        int64 array of indices, sorted by cost, then by index.
    """
    cost = np.asarray(cost, dtype=float).ravel()
    value = np.asarray(value, dtype=float).ravel()
    if cost.shape != value.shape:
        raise ValueError(f"`cost` and `value` must have the same length. Received: "
                         f"{cost.size} and {value.size}")
    if not (np.all(np.isfinite(cost)) and np.all(np.isfinite(value))):
        raise ValueError("`cost` and `value` must be finite (no NaN or inf).")
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(cost.size), cost))
    c, v = cost[order], value[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])         # first row of each cost
    group = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1            # cost group of each row
    group_max = np.maximum.reduceat(v, starts)
    cheaper_best = np.r_[-np.inf, np.maximum.accumulate(group_max)[:-1]]
    keep = (v == group_max[group]) & (v > cheaper_best[group])
    return order[keep].astype(np.int64)


def gap_to_front(cost, value):
    """Per point: best ``value`` among points with cost <= its cost, minus its value
    (0 on the front): how far below the front it sits at its own cost."""
    cost = np.asarray(cost, dtype=float)
    value = np.asarray(value, dtype=float)
    return np.array([value[cost <= c].max() - v for c, v in zip(cost, value)])


# -- data --------------------------------------------------------------------------


def manifest_path():
    """The published manifest, found without importing kronecker_zoo (no TensorFlow)."""
    spec = importlib.util.find_spec("kronecker_zoo")
    if spec is None or spec.origin is None:
        raise ImportError("kronecker_zoo is not importable: run from the repository root "
                          "with PYTHONPATH=. or install the package.")
    return os.path.join(os.path.dirname(spec.origin), "weights", "manifest.json")


def _manifest():
    with open(manifest_path(), encoding="utf-8") as f:
        return json.load(f)


def classifier_names(tiny=False):
    """The families at every depth, then every published student (manifest order)."""
    if tiny:
        return list(TINY_MODELS)
    students = [name for name, entries in _manifest().items()
                if "teacher" in entries.get(DATASET, {})]
    return [f"{f}_{d}" for d in DEPTHS for f in FAMILIES] + students


def manifest_points(names):
    """One dict per model from the manifest entry of its Fashion-MNIST weights; a
    student's family is ``kron_student`` / ``lowrank_student`` and its twin its teacher."""
    manifest = _manifest()
    points = []
    for name in names:
        entry = manifest[name][DATASET]
        if "teacher" in entry:
            family, twin = STUDENT_FAMILY[entry["method"]], entry["teacher"]["model"]
            depth = twin.rsplit("_", 1)[1]
        else:
            family, depth = name.rsplit("_", 1)
            twin = f"resnet_{depth}"
        twin_entry = manifest[twin][DATASET]
        points.append({
            "name": name, "family": family, "depth": int(depth),
            "params": int(entry["params"]), "macs": int(entry["macs"]),
            "test_accuracy": float(entry["test_accuracy"]), "epochs": int(entry["epochs"]),
            "dense_twin": twin, "params_dense_twin": int(twin_entry["params"]),
            "test_accuracy_dense_twin": float(twin_entry["test_accuracy"]),
            "epochs_dense_twin": int(twin_entry["epochs"]),
            "compression_vs_twin": round(twin_entry["params"] / entry["params"], 4),
            "accuracy_change_points": round(
                100.0 * (entry["test_accuracy"] - twin_entry["test_accuracy"]), 4),
        })
    return points


def machine_info():
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")]
        if models:
            info["cpu"] = models[0]
    except OSError:
        pass
    try:
        from importlib.metadata import version
        info["ai_edge_litert"] = version("ai-edge-litert")
        info["tensorflow"] = version("tensorflow")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return info


# Timing runs in a fresh interpreter process that loads only LiteRT and NumPy (the
# runner module of kronecker_zoo.export, loaded by path, not the TensorFlow-importing
# package): in the process that had built and converted the ten models, one file
# (kron_resnet_20) ran at twice its time in most rounds.
_TIMER = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("kz_export_runner", sys.argv[1])
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
job = json.loads(sys.argv[2])
out = {name: [] for name in job["names"]}
for _ in range(job["rounds"]):
    for name in job["names"]:
        res = runner.benchmark_tflite(job["files"][name], threads=(1,), runs=job["runs"],
                                      warmup=job["warmup"])[1]
        out[name].append(res["median_ms"])
print(json.dumps(out))
"""


def measure_latency(names, rounds=7, runs=200, warmup=20):
    """Export each published model to float32 TFLite and time it (see module docstring).

    Returns ``({name: latency dict}, machine dict)``. Rounds are interleaved over the
    models so that a slow spell of the (shared) machine hits all of them alike; the
    timing runs `kronecker_zoo.export.benchmark_tflite` in a separate process.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from kronecker_zoo import models
    from kronecker_zoo.export import runner, to_tflite

    machine = machine_info()
    files, out = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model = models.get(name, weights=DATASET)
            export = to_tflite(model, os.path.join(tmp, f"{name}.tflite"), overwrite=True)
            files[name] = export.path
            out[name] = {"tflite_bytes": int(export.size_bytes),
                         "params_built": int(model.count_params())}
        job = {"names": list(names), "files": files, "rounds": rounds, "runs": runs,
               "warmup": warmup}
        machine["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _TIMER, runner.__file__, json.dumps(job)],
                              capture_output=True, text=True, check=False)
        machine["benchmark_seconds"] = round(time.perf_counter() - start, 1)
        machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if proc.returncode != 0:
        raise RuntimeError(f"The latency benchmark failed:\n{proc.stderr[-2000:]}")
    timings = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in names:
        r = np.asarray(timings[name])
        out[name].update(rounds_ms=[round(float(x), 4) for x in r],
                         latency_ms=round(float(r.min()), 4),
                         latency_median_of_rounds_ms=round(float(np.median(r)), 4),
                         latency_spread_ms=[round(float(r.min()), 4), round(float(r.max()), 4)])
    machine.update(rounds=rounds, runs_per_round=runs, warmup=warmup, threads=1, batch_size=1,
                   delegate="XNNPACK (LiteRT default)", quantization="float32",
                   timing_process="separate Python process loading only LiteRT + NumPy")
    return out, machine


def fronts_of(points, costs):
    """``{cost: [names on the front, cheapest first]}`` for every cost all points have."""
    acc = np.array([p["test_accuracy"] for p in points])
    fronts = {}
    for key in costs:
        if any(p.get(key) is None for p in points):
            continue
        idx = pareto_front([p[key] for p in points], acc)
        fronts[key] = [points[i]["name"] for i in idx]
    return fronts


# -- figures -----------------------------------------------------------------------


def new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _freeze_layout(fig):
    """Run the constrained layout once, then keep the axes where they are (so labels
    placed in display coordinates stay where they were placed)."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
    return fig.canvas.get_renderer()


_LABEL_BOX = {"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.75}
_OFFSETS = [(6, 5), (6, -11), (-6, 5), (-6, -11), (0, 9), (0, -15), (10, -3), (-10, -3),
            (14, 10), (14, -16), (-14, 10), (-14, -16), (0, 18), (0, -24)]


def _place_labels(ax, renderer, xy, texts, other_points=()):
    """Greedy label placement: each text goes to the candidate offset whose box
    overlaps least with the labels already placed, the markers (``xy`` and
    ``other_points``) and the area outside the axes."""
    from matplotlib.transforms import Bbox

    ax_box = ax.get_window_extent(renderer)
    markers = [Bbox.from_bounds(*(ax.transData.transform(p) - 7), 14, 14)
               for p in list(xy) + list(other_points)]
    placed = []

    def overlap(a, b):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return max(w, 0) * max(h, 0)

    for (x, y), text in zip(xy, texts):
        best = None
        for dx, dy in _OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                            fontsize=7, ha=ha, va="bottom", bbox=_LABEL_BOX)
            box = t.get_window_extent(renderer).padded(2)
            inside = overlap(box, ax_box)
            score = (box.width * box.height - inside) * 3
            score += sum(overlap(box, b) for b in placed) * 2
            score += sum(overlap(box, m) for m in markers) * 2
            score += 0.01 * (dx * dx + dy * dy)
            t.remove()
            if best is None or score < best[0]:
                best = (score, dx, dy, ha)
        _, dx, dy, ha = best
        t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                        fontsize=7, ha=ha, va="bottom", bbox=_LABEL_BOX)
        placed.append(t.get_window_extent(renderer).padded(2))


def _human(x, _pos=None):
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def _log_ticks(ax):
    """Readable log-x ticks: 1, 2, 5 per decade, written 20k / 3M / 0.5."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_human))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _marker_kwargs(p):
    colour, marker, _ = STYLE[p["family"]]
    size = 160 if marker == "*" else 60
    if p["epochs"] >= FILLED_EPOCHS:
        return {"c": colour, "marker": marker, "s": size, "edgecolors": "black",
                "linewidths": 0.6}
    return {"facecolors": "white", "edgecolors": colour, "marker": marker, "s": size,
            "linewidths": 1.8}


def _short(p):
    if p["family"] in STUDENT_FAMILY.values():  # resnet_20_kron5x -> "r20 kron5x"
        return f"r{p['depth']} {p['name'].split('_', 2)[2]} ({p['epochs']} ep)"
    return f"{STYLE[p['family']][2]} {p['depth']} ({p['epochs']} ep)"


def _legend_handles(points):
    from matplotlib.lines import Line2D

    short = ", ".join(f"{p['name']}: {p['epochs']}" for p in points
                      if p["epochs"] < FILLED_EPOCHS)

    handles = [Line2D([], [], ls="", marker=m, color=c, markersize=9 if m == "*" else 7,
                      label=f)
               for f, (c, m, _) in STYLE.items()]
    handles += [
        Line2D([], [], ls="", marker="o", color="grey", markeredgecolor="black",
               label=f"filled: >= {FILLED_EPOCHS} epochs (teachers 30/40, students 15+, "
                     "families 10 or 30)"),
        Line2D([], [], color="black", lw=1, ls="--", label="Pareto front (all epochs)"),
    ]
    if short:  # the under-trained points, named with their epochs
        handles.insert(-1, Line2D([], [], ls="", marker="o", markerfacecolor="white",
                                  markeredgecolor="grey", markeredgewidth=1.8,
                                  label=f"hollow: < {FILLED_EPOCHS} epochs ({short})"))
    return handles


def plot_fronts(path, points, fronts, machine, tiny=False):
    """Accuracy vs params, MACs and latency (log x), fronts as dashed steps."""
    fig = new_figure((17, 6.2))
    axes = fig.subplots(1, 3)
    for ax, key in zip(axes, COSTS):
        ax.set_xscale("log")
        ax.set_xlabel(AXIS_LABELS[key])
        ax.set_ylabel("test accuracy, full Fashion-MNIST test set (%)")
        ax.grid(True, which="both", alpha=0.25)
        if key not in fronts:
            ax.text(0.5, 0.5, "latency not measured\n(tiny run or --no-latency)",
                    transform=ax.transAxes, ha="center", va="center", color="grey")
            ax.set_title("accuracy vs TFLite latency")
            continue
        xs = np.array([p[key] for p in points], dtype=float)
        ys = np.array([100 * p["test_accuracy"] for p in points])
        for p, x, y in zip(points, xs, ys):
            ax.scatter([x], [y], zorder=3, **_marker_kwargs(p))
        by_name = {p["name"]: i for i, p in enumerate(points)}
        idx = [by_name[n] for n in fronts[key]]
        ax.step(xs[idx], ys[idx], where="post", color="black", ls="--", lw=1, zorder=2)
        ax.set_xlim(xs.min() / 1.6, xs.max() * 1.6)
        _log_ticks(ax)
        ax.set_ylim(ys.min() - 0.6, ys.max() + 0.5)
        title = {"params": "accuracy vs parameters", "macs": "accuracy vs MACs",
                 "latency_ms": "accuracy vs float32 TFLite latency (measured, noisy)"}[key]
        ax.set_title(title)
    if "latency_ms" in fronts and machine:
        axes[2].text(0.99, 0.01,
                     f"{machine.get('cpu', machine.get('machine', ''))}\n"
                     f"{machine.get('cpu_count')} cores shared with other jobs; LiteRT "
                     f"{machine.get('ai_edge_litert', '?')}, XNNPACK\nlowest per-round median of "
                     f"{machine['rounds']} interleaved rounds x {machine['runs_per_round']} runs",
                     transform=axes[2].transAxes, ha="right", va="bottom", fontsize=6.5,
                     color="dimgrey")
    fig.legend(handles=_legend_handles(points), loc="outside lower center", ncol=4, fontsize=8.5,
               frameon=False)
    fig.suptitle("Published Fashion-MNIST classifiers: accuracy vs cost"
                 + (" (tiny run: 3 models)" if tiny else "")
                 + ".\nBudgets differ (dense teachers 30/40 epochs, students 15 epochs "
                   "distilled from them, depth-8 families 10, kron_resnet_20 4): "
                   "hollow points are under-trained, not weaker families",
                 fontsize=10.5)
    renderer = _freeze_layout(fig)
    for ax, key in zip(axes, COSTS):
        if key in fronts:
            _place_labels(ax, renderer, [(p[key], 100 * p["test_accuracy"]) for p in points],
                          [_short(p) for p in points])
    fig.savefig(path, dpi=110)
    return path


def plot_vs_twin(path, points, tiny=False):
    """Compression vs the dense twin against the accuracy change, with the anchors."""
    fig = new_figure((9.5, 7.6))
    ax = fig.subplots()
    pts = [p for p in points if p["family"] != "resnet"]
    xs = np.array([p["compression_vs_twin"] for p in pts])
    ys = np.array([p["accuracy_change_points"] for p in pts])
    x_lo, x_hi = min(0.4, xs.min() / 1.3), max(12.0, xs.max() * 1.6)
    y_lo, y_hi = min(-4.0, ys.min() - 0.5), max(1.8, ys.max() + 0.5)
    ax.set_xscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.axvspan(TARGET["min_compression"], x_hi, ymin=(TARGET["min_accuracy_change_points"] - y_lo)
               / (y_hi - y_lo), color="#2ca02c", alpha=0.12, lw=0,
               label="project target: >= 5x fewer params, >= -1.0 pt")
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(-1.0, color="grey", lw=0.8, ls=":")
    ax.axvline(1.0, color="black", lw=0.8)
    z = ANCHORS["zhou2015"]
    ax.vlines(z["compression"], z["accuracy_change_points"], 0, color="#8c564b", lw=2.5,
              alpha=0.5)
    ax.scatter([z["compression"]], [z["accuracy_change_points"]], marker="^", s=110,
               color="#8c564b", zorder=4, label=z["label"] + " (bar: the range claimed)")
    g = ANCHORS["gkpd2022"]
    ax.scatter([g["compression"]], [g["accuracy_change_points"]], marker="P", s=130,
               color="#17becf", edgecolors="black", zorder=4, label=g["label"])
    for p, x, y in zip(pts, xs, ys):
        ax.scatter([x], [y], zorder=3, **_marker_kwargs(p))
    ax.scatter([1.0], [0.0], marker="o", s=60, color=STYLE["resnet"][0], edgecolors="black",
               zorder=3, label="dense twin resnet_<depth> (same depth; a student's teacher)")
    ax.set_xlabel("compression vs dense twin: params(resnet_<depth>) / params (log)")
    ax.set_ylabel("accuracy change vs dense twin (points)")
    ax.set_xticks([0.5, 1, 2, 3.6, 5, 10])
    ax.set_xticklabels(["0.5x", "1x", "2x", "3.6x", "5x", "10x"])
    ax.grid(True, which="major", alpha=0.25)
    ax.set_title("Fashion-MNIST classifiers vs their dense twin"
                 + (" (tiny run)" if tiny else "")
                 + "\ntwin: resnet_<depth> as published (30/40 epochs); students: 15 "
                   "epochs distilled from it;\nthe from-scratch families had 10 (depth 8), "
                   "4 (depth 20) or 1 (drn_20) epochs", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    renderer = _freeze_layout(fig)
    _place_labels(ax, renderer, list(zip(xs, ys)) + [(1.0, 0.0)],
                  [_short(p) for p in pts] + ["resnet"],
                  other_points=[(a["compression"], a["accuracy_change_points"])
                                for a in ANCHORS.values()])
    fig.savefig(path, dpi=110)
    return path


# -- the experiment ------------------------------------------------------------------


def meets_target(point):
    """Whether ``point`` is >= 5x smaller than its dense twin at >= -1.0 point (`TARGET`)."""
    return (point["compression_vs_twin"] >= TARGET["min_compression"]
            and point["accuracy_change_points"] >= TARGET["min_accuracy_change_points"])


def _finding(points, fronts, by_epochs):
    by = {p["name"]: p for p in points}
    kron = [p for p in points if p["family"] == "kron_resnet"]
    parts = []
    for key, names in fronts.items():
        parts.append(f"{key} front: {', '.join(names)}")
    for p in kron:
        on = [k for k, names in fronts.items() if p["name"] in names]
        gaps = ", ".join(f"{k} {p['gap_to_front_points'][k]:.2f}"
                         for k in fronts if k in p["gap_to_front_points"])
        parts.append(
            f"{p['name']} ({p['epochs']} ep): {p['compression_vs_twin']:.2f}x fewer params than "
            f"{p['dense_twin']}, {p['accuracy_change_points']:+.2f} pt; on front(s): "
            f"{', '.join(on) if on else 'none'}; points below the front at its cost: {gaps}; "
            f"target {'met' if meets_target(p) else 'not met'}")
    lr = by.get("lowrank_resnet_8")
    if lr and "kron_resnet_8" in by:
        parts.append(f"at equal params lowrank_resnet_8 has {100 * lr['test_accuracy']:.2f}% vs "
                     f"{100 * by['kron_resnet_8']['test_accuracy']:.2f}% with "
                     f"{by['kron_resnet_8']['macs'] / lr['macs']:.1f}x fewer MACs")
    kron_names = {p["name"] for p in kron}
    if kron_names and by_epochs:
        on_equal = sorted({n for fr in by_epochs.values() for names in fr.values()
                           for n in names} & kron_names)
        parts.append("among models with equal epochs, kron_resnet is on "
                     + (f"the fronts of {', '.join(on_equal)}" if on_equal else "no front"))
    for p in (q for q in points if q["family"] == "kron_student"):
        on = [k for k, names in fronts.items() if p["name"] in names]
        twin = by.get(p["name"].replace("_kron", "_lowrank").replace("_lowmac", ""))
        versus = ""
        if twin:
            change = 100 * (p["test_accuracy"] - twin["test_accuracy"])
            versus = (f"; vs {twin['name']} ({twin['params']:,} params, "
                      f"{twin['macs'] / 1e6:.2f}M MACs): {change:+.2f} pt")
        parts.append(
            f"{p['name']} ({p['params']:,} params, {p['macs'] / 1e6:.2f}M MACs): "
            f"{p['compression_vs_twin']:.2f}x fewer params than {p['dense_twin']}, "
            f"{p['accuracy_change_points']:+.2f} pt; on front(s): "
            f"{', '.join(on) if on else 'none'}{versus}; "
            f"target {'met' if meets_target(p) else 'not met'}")
    for depth in DEPTHS:
        k, d = by.get(f"kron_resnet_{depth}"), by.get(f"resnet_{depth}")
        if k and d and k.get("latency_ms") and d.get("latency_ms"):
            parts.append(f"float32 TFLite latency kron_resnet_{depth} {k['latency_ms']:.2f} ms vs "
                         f"resnet_{depth} {d['latency_ms']:.2f} ms "
                         f"({k['latency_ms'] / d['latency_ms']:.1f}x, measured, noisy)")
    return "; ".join(parts) + "."


def run(out_dir, tiny=False, latency=None, rounds=7, runs=200, warmup=20):
    """Computes the points and fronts, writes ``pareto.json`` and two PNGs into ``out_dir``.

    Args:
        out_dir: output folder (created if missing).
        tiny: three ``_8`` models from the manifest and no latency (a few seconds).
        latency: measure TFLite latency; defaults to ``not tiny``.
        rounds, runs, warmup: interleaved benchmark rounds; ``runs`` timed invokes
            (after ``warmup``) per round and model.

    Returns:
        The JSON dict, with ``"figures"`` (file names).
    """
    os.makedirs(out_dir, exist_ok=True)
    latency = (not tiny) if latency is None else bool(latency)
    names = classifier_names(tiny)
    points = manifest_points(names)
    machine = None
    if latency:
        lat, machine = measure_latency(names, rounds=rounds, runs=runs, warmup=warmup)
        for p in points:
            p.update(lat[p["name"]])
            p["params_match_manifest"] = p.pop("params_built") == p["params"]
    else:
        for p in points:
            p["latency_ms"] = None
    fronts = fronts_of(points, COSTS)
    acc = np.array([p["test_accuracy"] for p in points])
    for key in fronts:
        gaps = gap_to_front([p[key] for p in points], acc)
        for p, gap in zip(points, gaps):
            p.setdefault("gap_to_front_points", {})[key] = round(100 * float(gap), 4)
    for p in points:
        p["on_front"] = sorted(k for k, names_ in fronts.items() if p["name"] in names_)
    by_epochs = {}
    for epochs in sorted({p["epochs"] for p in points}):
        group = [p for p in points if p["epochs"] == epochs]
        if len(group) > 1:
            by_epochs[str(epochs)] = fronts_of(group, COSTS)
    figures = [f"{NAME}.png", f"{NAME}_vs_twin.png"]
    plot_fronts(os.path.join(out_dir, figures[0]), points, fronts, machine, tiny)
    plot_vs_twin(os.path.join(out_dir, figures[1]), points, tiny)
    result = {
        "name": NAME,
        "claim": ("Kronecker-factored ResNets trade parameters for accuracy at a better rate "
                  "than other compact families (Zhou et al.: 3.6x fewer params at < 1% drop; "
                  "GKPD: 5x at -1.03 pt); project target: >= 5x fewer params than the dense "
                  "twin at >= -1.0 pt."),
        "finding": _finding(points, fronts, by_epochs),
        "tiny": bool(tiny),
        "dataset": "Fashion-MNIST, full 10,000-image test set (accuracies from the manifest)",
        "source": "kronecker_zoo/weights/manifest.json",
        "points": points,
        "fronts": fronts,
        "fronts_by_epochs": by_epochs,
        "front_rule": "non-dominated: no other point has lower-or-equal cost and higher-or-"
                      "equal test accuracy with one strict; equal points both stay",
        "anchors": ANCHORS,
        "target": TARGET,
        "latency": ({"measured": True, "deterministic": False, "machine": machine,
                     "estimator": "latency_ms = lowest of the per-round medians (rounds "
                                  "interleaved over models); latency_median_of_rounds_ms and "
                                  "rounds_ms also given",
                     "note": "wall-clock medians on a shared 2-core machine (other jobs "
                             "running): noisy, compare ratios, not absolute values"}
                    if machine else {"measured": False}),
        "caveat": "budgets differ: resnet_8 / resnet_20 trained 30 / 40 epochs, the other "
                  "depth-8 families 10, kron_resnet_20 4, separable_resnet_20, "
                  "lowrank_resnet_20 and drn_20 30 (teachers' recipe), the students 15 epochs of "
                  "distillation from their (trained) teacher; compare points with equal "
                  "epochs (fronts_by_epochs) and students with students",
        "figures": figures,
    }
    return write_json(out_dir, NAME, result)


def main(argv=None):
    cli = parser(__doc__)
    cli.add_argument("--no-latency", action="store_true", help="skip the TFLite timings")
    cli.add_argument("--rounds", type=int, default=7)
    cli.add_argument("--runs", type=int, default=200)
    args = cli.parse_args(argv)
    report(args.out, NAME, run(args.out, tiny=args.tiny,
                               latency=False if args.no_latency else None,
                               rounds=args.rounds, runs=args.runs))


if __name__ == "__main__":
    main()
