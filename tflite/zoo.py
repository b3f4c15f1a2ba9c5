"""Registry models end to end: load, export, verify, time: the engine of the `tflite/` tools.

`compare_litert` exports each model in float32 and int8, checks both against Keras on
the model's test set and times them with LiteRT (XNNPACK) at 1 and 2 threads;
`litert_table` prints the side-by-side table. int8 is calibrated on train images
of the same data set (`calibration_set`).
"""

import itertools
import os
import tempfile

import numpy as np

from kronecker_zoo import data, models, tables
from kronecker_zoo import weights as weight_registry
from kronecker_zoo.export import (
    benchmark_tflite_interleaved,
    calibration_images,
    pretraining_calibration_data,
    to_tflite,
    verify_tflite,
)
from kronecker_zoo.export.calibration import DEFAULT_CALIBRATION_EXAMPLES
from kronecker_zoo.export.execution import describe_execution, execution_layers

PRETRAINING_SETS = {"classification": "fashion_mnist", "segmentation": "fashion_scenes"}


def default_weights(name):
    """The published tag of ``name``'s pretraining set, or `None` (fresh weights)."""
    tag = PRETRAINING_SETS[models.spec(name).task]
    return tag if tag in weight_registry.published(name) else None


def load_model(name, weights="auto"):
    """``models.get(name, weights=...)``; ``"auto"`` = `default_weights(name)`."""
    return models.get(name, weights=default_weights(name) if weights == "auto" else weights)


def test_set(name, examples=None):
    """``(images, labels)`` of the test split of ``name``'s pretraining set (first N)."""
    task = models.spec(name).task
    images, labels = (data.fashion_mnist("test") if task == "classification"
                      else data.fashion_scenes("test"))
    if examples is not None:
        images, labels = images[:examples], labels[:examples]
    return images, labels


def calibration_set(name, weights, count=DEFAULT_CALIBRATION_EXAMPLES):
    """int8 calibration images for ``name`` with ``weights`` in `compare_litert`.

    Published tag: its pretraining images (`pretraining_calibration_data`). Other
    weights (`None`, a path): train images of the data set `test_set` scores on.
    """
    if isinstance(weights, str) and weights in weight_registry.published(name):
        return pretraining_calibration_data(name, weights, count)
    return calibration_images(PRETRAINING_SETS[models.spec(name).task], count)


def resize_nearest(images, hw):
    """``images`` ``(N, H, W[, C])`` resized to ``hw`` by nearest neighbour: output pixel
    ``(i, j)`` is input pixel ``(i * H // h, j * W // w)`` (an exact x8 block repeat for
    28 -> 224)."""
    images = np.asarray(images)
    rows = np.arange(hw[0]) * images.shape[1] // hw[0]
    cols = np.arange(hw[1]) * images.shape[2] // hw[1]
    return images[:, rows][:, :, cols]


def compare_litert(names, weights="auto", quantizations=(None, "int8"), threads=(1, 2),
                   runs=100, warmup=20, examples=None, directory=None, verbose=False,
                   input_hw=None, execution="factored"):
    """One row per (model, quantization): size, latency, parity and accuracy.

    Args:
        names: registry names, e.g. ``["kron_resnet_8", "resnet_8"]``.
        weights: ``"auto"`` (published weights where there are, else fresh), `None`,
            or a tag/path used for every model.
        quantizations: exports to make per model.
        threads: interpreter thread counts to time.
        runs, warmup: timed and untimed invokes per file and thread count, timed
            interleaved in rounds of 10 across all files (median of the round medians).
        examples: test images for parity/accuracy (default: the whole test split).
        directory: where the .tflite files go (default: a temporary directory,
            removed afterwards).
        input_hw: ``(height, width)`` to export and time at instead of the model's
            default (e.g. ``(224, 224)``): the weights are loaded into the model built
            at that size, and the test and calibration images are resized to it
            (`resize_nearest`), so parity is measured at that size; the accuracy of a
            model trained at 28x28 on x8 images is reported, not a claim.
        execution: `to_tflite`'s ``execution`` for every model: "factored" (default) or
            "planned" (the Kronecker layers LiteRT's cost model finds faster
            materialised are stored whole), or a list of them: a model with Kronecker
            layers is then exported once per execution (its column named
            ``"model (execution)"``), every file timed in the same interleaved rounds.

    Returns:
        A list of dicts: ``model, weights, params, quantization, size_bytes,
        latency_ms {threads: median}, agreement, rel_error, keras_accuracy,
        tflite_accuracy, passed, path`` (path only when ``directory`` is given).
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.fspath(directory) if directory is not None else tmp
        for name in names:
            tag = default_weights(name) if weights == "auto" else weights
            if input_hw is None:
                model = load_model(name, tag)
                images, labels = test_set(name, examples)
            else:
                channels = models.spec(name).input_shape[-1]
                model = models.get(name, weights=tag, input_shape=(*input_hw, channels))
                images, labels = test_set(name, examples)
                images = resize_nearest(images, input_hw)
                if models.spec(name).task == "segmentation":
                    labels = resize_nearest(labels, input_hw)
            executions = [execution] if isinstance(execution, str) else list(execution)
            if not execution_layers(model):
                executions = executions[:1]  # nothing to choose: one export
            for quantization, how in itertools.product(quantizations, executions):
                label = quantization or "float32"
                column, stem = ((name, name) if len(executions) == 1
                                else (f"{name} ({how})", f"{name}_{how}"))
                path = os.path.join(folder, f"{stem}_{label}.tflite")
                calibration = (calibration_set(name, tag) if quantization == "int8"
                               else None)
                if calibration is not None and input_hw is not None:
                    calibration = resize_nearest(calibration, input_hw)
                info = to_tflite(model, path, quantization=quantization,
                                 representative_data=calibration,
                                 overwrite=directory is None, execution=how)
                report = verify_tflite(model, info, images, labels)
                row = {
                    "model": name, "column": column, "weights": tag, "params": info.params,
                    "quantization": label, "size_bytes": info.size_bytes,
                    "latency_ms": {}, "file": info.path,
                    "agreement": report.agreement, "rel_error": report.rel_error,
                    "sqnr_db": report.sqnr_db,
                    "keras_accuracy": report.keras_accuracy,
                    "tflite_accuracy": report.tflite_accuracy, "passed": report.passed,
                    "ops": info.ops, "path": path if directory is not None else None,
                }
                if verbose:
                    print(f"{column} {label}: {info.size_bytes:,} B, "
                          f"relative error {report.rel_error:.2g}, SQNR {report.sqnr_db:.1f} dB, "
                          f"agreement {100 * report.agreement:.2f}%, accuracy Keras "
                          f"{100 * report.keras_accuracy:.2f}% / LiteRT "
                          f"{100 * report.tflite_accuracy:.2f}% ({report.num_examples} images, "
                          f"{'PASSED' if report.passed else 'FAILED'}); ops "
                          f"{', '.join(info.ops)}"
                          + (f"; {describe_execution(info.execution)} execution"
                             if info.kronecker_layers else ""), flush=True)
                rows.append(row)
        # Timed side by side, interleaved, once every file exists (see
        # `benchmark_tflite_interleaved`): noise from the machine hits all alike.
        latency = benchmark_tflite_interleaved([r["file"] for r in rows], threads=threads,
                                               rounds=max(1, runs // 10), runs=10,
                                               warmup=warmup)
        for row in rows:
            row["latency_ms"] = latency.pop(row.pop("file"))
    return rows


def litert_table(rows):
    """Side-by-side Markdown table of `compare_litert` rows: one column per model (per
    model and execution when several were exported)."""
    models_ = list(dict.fromkeys(r.get("column", r["model"]) for r in rows))
    by = {(r.get("column", r["model"]), r["quantization"]): r for r in rows}
    quantizations = list(dict.fromkeys(r["quantization"] for r in rows))
    threads = sorted({t for r in rows for t in r["latency_ms"]})
    first = {m: next(r for r in rows if r.get("column", r["model"]) == m) for m in models_}

    def cell(model, quantization, fn):
        row = by.get((model, quantization))
        return "-" if row is None else fn(row)

    body = [["weights"] + [first[m]["weights"] or "fresh" for m in models_],
            ["params"] + [f"{first[m]['params']:,}" for m in models_],
            ["Keras accuracy"] + ["-" if first[m]["keras_accuracy"] is None
                                  else f"{100 * first[m]['keras_accuracy']:.2f}%"
                                  for m in models_]]
    for q in quantizations:
        body.append([f"{q} file size"] + [cell(
            m, q, lambda r: f"{r['size_bytes'] / 1024:.1f} KiB "
                            f"({r['size_bytes'] / r['params']:.2f} B/param)") for m in models_])
        for t in threads:
            body.append([f"{q} latency, {t} thread{'s' if t > 1 else ''}"] + [
                cell(m, q, lambda r, t=t: f"{r['latency_ms'][t]:.3f} ms") for m in models_])
        body.append([f"{q} accuracy (LiteRT)"] + [cell(
            m, q, lambda r: "-" if r["tflite_accuracy"] is None
            else f"{100 * r['tflite_accuracy']:.2f}%") for m in models_])
        body.append([f"{q} argmax agreement with Keras"] + [cell(
            m, q, lambda r: f"{100 * r['agreement']:.2f}%") for m in models_])
    return tables.markdown_table([""] + [f"`{m}`" for m in models_], body)
