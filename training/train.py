"""Train one zoo model on Fashion-MNIST (classification) or fashion scenes (segmentation).

    python training/train.py --config training/configs/kron_resnet_8.json
    python training/train.py --model kron_resnet_8 --epochs 2 --out /tmp/run --subset 2000
    python training/train.py --config ... --strategy mirrored      # all local devices
    TF_CONFIG=... python training/train.py --config ... --strategy multiworker

Writes into ``--out`` (which must not exist yet, or be empty: nothing is overwritten):
``config.json`` (the resolved recipe), ``log.csv`` (per-epoch metrics),
``<model>.weights.h5`` and ``result.json`` (test metric, params, MACs, time).
The run writes into the sibling directory ``<out>.partial`` and renames it to ``--out``
only when it succeeds, so ``--out`` is never half-written. While it trains,
``<out>.partial/checkpoint/`` holds the weights, the optimizer state and the epoch of the
last finished epoch (``keras.callbacks.BackupAndRestore``); an interrupted or failed run
continues from there with the same command plus ``--resume`` (the recipe is read back from
``<out>.partial/config.json``; a different one is refused). A run that fails before its
first epoch ends leaves nothing. The data order and the augmentation follow the seed,
and a resumed run first moves the data pipeline on past the epochs it has finished, so it
sees the batches an uninterrupted run would have seen (with the same seed and kernels, it
ends with the same weights; with the default strategy only: under ``--strategy mirrored``
or ``multiworker`` the resumed run's data order differs from the uninterrupted one's).
Imports only the public kronecker_zoo API.
"""

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kronecker_zoo import data, models, report  # noqa: E402

DEFAULTS = {
    "model": None,
    "dataset": None,  # fashion_mnist (classification) / fashion_scenes (segmentation)
    "epochs": 10,
    "batch_size": 128,
    "optimizer": "adamw",  # adamw, or sgd (Nesterov momentum 0.9)
    "learning_rate": 2e-3,
    "weight_decay": 1e-4,  # decoupled, as Keras applies it: w -= lr * weight_decay * w
    "augment": None,  # None, or "crop_flip" (pad crop_padding, random crop, random flip)
    "crop_padding": 4,
    "jit_compile": False,  # XLA-compile the train step (TensorFlow and JAX backends)
    "label_smoothing": 0.0,
    "seed": 0,
    "subset": None,  # train on the first N examples (short runs, tests)
    "test_subset": None,  # evaluate on the first N test examples (tests); None: all
    "steps_per_epoch": None,
    "overrides": {},  # builder arguments for models.get, e.g. {"execution": "materialized"}
    "init_from": None,  # a finished run directory: start from its weights, layer by name
}
STRATEGIES = ("default", "mirrored", "multiworker")
OPTIMIZERS = ("adamw", "sgd")
CHECKPOINT = "checkpoint"  # in the partial directory: weights, optimizer state, epoch
# Keys that recipes recorded in the manifest still carry, at the value that did nothing.
LEGACY_KEYS = {"validation_fraction": 0.0}


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3 passes it.

    Keras 3 ``fit``/``evaluate`` (TF backend) call this strategy's ``reduce`` in two ways
    that it rejects (keras-team/keras#20585): with the whole ``(x, y)`` batch (a nest;
    "Attempt to convert a value (PerReplica...) to a Tensor") to build the model, and as
    ``reduce("MEAN", logs, axis=0)`` on the scalar per-replica metric results ("Invalid
    reduction dimension 0 for input with 0 dimensions"). So reduce leaf by leaf, as
    ``MirroredStrategy`` does, and reduce scalars across replicas only (``axis=None``).
    """

    def reduce(self, reduce_op, value, axis=None):
        def reduce_leaf(v):
            scalar = self.experimental_local_results(v)[0].shape.rank == 0
            return super(_MultiWorkerStrategy, self).reduce(
                reduce_op, v, None if scalar else axis)

        return tf.nest.map_structure(reduce_leaf, value)


def make_strategy(name):
    """The tf.distribute strategy of ``name`` (multiworker reads TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable "
                             "(cluster and task); see training/README.md")
        return _MultiWorkerStrategy()
    if name != "default":
        raise ValueError(f"--strategy must be one of {STRATEGIES}. Received: {name!r}")
    return tf.distribute.get_strategy()


def load_data(dataset, subset, test_subset=None):
    """``(x_train, y_train), (x_test, y_test)`` as raw uint8 pixels and int labels."""
    if dataset == "fashion_mnist":
        train, test = data.fashion_mnist("train"), data.fashion_mnist("test")
    elif dataset == "fashion_scenes":
        train, test = data.fashion_scenes("train"), data.fashion_scenes("test")
    else:
        raise ValueError(f"Unknown dataset {dataset!r}: fashion_mnist or fashion_scenes")
    if subset:
        train = (train[0][:subset], train[1][:subset])
    if test_subset:
        test = (test[0][:test_subset], test[1][:test_subset])
    return train, test


def make_optimizer(config, steps):
    """The recipe's optimizer, its learning rate cosine-decayed to 1% over the run."""
    schedule = keras.optimizers.schedules.CosineDecay(
        config["learning_rate"], decay_steps=max(1, steps * config["epochs"]), alpha=0.01)
    if config["optimizer"] == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=config["weight_decay"])
    if config["optimizer"] == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                    weight_decay=config["weight_decay"])
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}. Received: "
                     f"{config['optimizer']!r}")


def compile_model(model, config, steps, segmentation):
    metrics = ["accuracy"]
    if segmentation:
        num_classes = model.output_shape[-1]
        metrics.append(keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, name="miou"))
    model.compile(
        optimizer=make_optimizer(config, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics,
        jit_compile=bool(config["jit_compile"]),
    )


def init_from_run(model, run_dir):
    """Copies into ``model`` the trained weights of every layer that the finished run in
    ``run_dir`` has under the same name (`models.transfer_weights` with
    ``missing="keep"``); returns the copied layers' names.

    How an ablation shares one trained front end: ``context_net_basic`` started from the
    ``context_front_end`` run gets its ``front*`` layers; layers the run lacks (the context
    module) keep their initialisation. Raises when no layer matches, or when a layer of the
    run cannot be copied into its namesake here (other shapes: e.g. another
    ``num_classes`` or ``front_channels``), head layers included.
    """
    with open(os.path.join(run_dir, "config.json")) as f:
        source_config = json.load(f)
    with open(os.path.join(run_dir, "result.json")) as f:
        weights = os.path.join(run_dir, json.load(f)["weights"])
    source = models.get(source_config["model"], input_shape=model.input_shape[1:],
                        **source_config.get("overrides", {}))
    source.load_weights(weights)
    try:
        kept = set(models.transfer_weights(source, model, missing="keep"))
    except ValueError as error:
        raise ValueError(f"init_from {run_dir}: {error}") from None
    trained = {layer.name for layer in source.layers if layer.weights}
    mismatched = sorted(kept & trained)
    if mismatched:
        raise ValueError(f"init_from {run_dir}: layers {mismatched} have other weight shapes "
                         f"there than in {model.name}: the run is not this model's front end")
    copied = [layer.name for layer in model.layers if layer.weights and layer.name not in kept]
    if not copied:
        raise ValueError(f"init_from {run_dir}: no layer of {model.name} has a trained "
                         f"namesake there ({sorted(trained)})")
    return copied


def partial_dir(out):
    """Where the run of ``out`` works (and keeps its checkpoint) until it succeeds."""
    return os.path.abspath(out).rstrip(os.sep) + ".partial"


def train(config, out, strategy_name="default", verbose=1, resume=False):
    """Runs one recipe; returns the result dict written to ``out/result.json``.

    ``resume=True`` continues the interrupted run in ``partial_dir(out)`` from its last
    checkpoint (``config`` may then be ``None``: the run's own recipe is used).
    """

    def prepare(config):
        if config["model"] not in models.MODELS:
            models.spec(config["model"])  # raises with the valid names
        segmentation = models.spec(config["model"]).task == "segmentation"
        config["dataset"] = config["dataset"] or ("fashion_scenes" if segmentation
                                                  else "fashion_mnist")
        if config["label_smoothing"]:  # the sparse loss of integer labels has none
            raise ValueError(f"label_smoothing={config['label_smoothing']!r} is not "
                             "supported (the recipes train on integer labels); leave it 0")
        if config["augment"] is not None and segmentation:
            raise ValueError(f"augment={config['augment']!r} is for classification recipes "
                             "(it would move the pixels but not the per-pixel labels)")
        return config

    def run(config, work):
        segmentation = models.spec(config["model"]).task == "segmentation"
        return _run(config, work, strategy_name, segmentation, verbose)

    return managed_run(config, out, resume, DEFAULTS, prepare, run)


def managed_run(config, out, resume, defaults, prepare, run):
    """The run directory protocol shared by the recipes (train.py, distill.py).

    Resolves the recipe (``defaults`` + ``config``, or the interrupted run's own with
    ``resume``; ``prepare(config)`` checks and completes it), works in `partial_dir`
    (``run(config, work)`` writes there and returns the result), keeps a failed run's
    checkpoint for ``--resume`` (or deletes the directory when no epoch finished), and
    renames the finished run to ``out``.
    """
    work = partial_dir(out)
    if resume:
        config = _resumed_config(work, config, defaults)
        if os.path.isfile(os.path.join(work, "result.json")):
            raise FileExistsError(f"--resume: the run in {work} has finished (result.json); "
                                  f"move its files to {out} instead of training again")
        if not os.path.isdir(os.path.join(work, CHECKPOINT)):
            raise FileNotFoundError(f"--resume: {work} holds no checkpoint (no epoch of it "
                                    "finished): run without --resume to start afresh, after "
                                    "deleting that directory")
    elif os.path.exists(work):
        raise FileExistsError(f"{work} holds an interrupted run of {out}: continue it with "
                              "--resume, or delete that directory to start afresh")
    config = {**defaults, **config}
    for key, value in LEGACY_KEYS.items():  # recipes recorded before a key was retired
        if config.get(key, value) == value and key not in defaults:
            config.pop(key, None)
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"unknown recipe keys {unknown}; known: {sorted(defaults)}")
    config = prepare(config)
    _check_out(out)
    created = not os.path.exists(work)
    os.makedirs(work, exist_ok=True)
    try:
        result = run(config, work)
    except BaseException:
        if created and not os.path.isdir(os.path.join(work, CHECKPOINT)):
            shutil.rmtree(work, ignore_errors=True)  # no epoch finished: nothing to resume
        raise
    shutil.rmtree(os.path.join(work, CHECKPOINT), ignore_errors=True)
    _publish(work, out)
    return result


def _resumed_config(work, config, defaults):
    """The recipe of the interrupted run in ``work``; ``config`` must agree with it."""
    path = os.path.join(work, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no interrupted run to continue ({path} is "
                                "missing); run without --resume to start one")
    with open(path) as f:
        saved = json.load(f)
    if config:
        differ = sorted(k for k, v in config.items()
                        if v is not None and v != saved.get(k, defaults.get(k)))
        if differ:
            raise ValueError(f"--resume: the recipe differs from the interrupted run's in "
                             f"{differ} (see {path}); resume with the same recipe")
    return saved


def _check_out(out):
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"{out} exists and is not an empty directory; choose a new "
                              "--out (runs are never overwritten)")


def _publish(work, out):
    """Rename the finished run ``work`` to ``out`` (absent, or an empty directory)."""
    try:
        _check_out(out)
        try:
            os.rename(work, out)  # POSIX: atomically replaces an empty directory
        except OSError:
            if not os.path.isdir(out) or os.listdir(out):
                raise
            os.rmdir(out)  # e.g. Windows, where rename never replaces a directory
            os.rename(work, out)
    except OSError as error:
        raise FileExistsError(f"the run finished but could not be moved to {out} ({error}); "
                              f"its files are in {work}") from None


class _EpochSeconds(keras.callbacks.Callback):
    """Adds ``seconds`` (wall time of the epoch) to the logs CSVLogger writes."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = round(time.time() - self._start, 1)


def _restored_epochs(checkpoint):
    """The epochs a resumed run has finished: the ``epoch`` of the checkpoint that
    ``BackupAndRestore`` will restore (its previous one when the latest weights file is
    unreadable, e.g. cut by a kill while written), 0 without a checkpoint."""
    import h5py

    latest = os.path.join(checkpoint, "latest.weights.h5")
    metadata = os.path.join(checkpoint, "training_metadata.json")
    if not os.path.isfile(latest):
        return 0
    try:
        with h5py.File(latest, "r") as f:
            f.visit(lambda name: None)
    except (OSError, RuntimeError, KeyError):
        metadata += ".bkp"  # BackupAndRestore falls back to the previous checkpoint
    if not os.path.isfile(metadata):
        return 0
    with open(metadata) as f:
        return int(json.load(f)["epoch"])


class _TrimLog(keras.callbacks.Callback):
    """First of the callbacks: on a resumed run, drops the log rows of the epochs the
    restored checkpoint does not hold (a row written just before a kill cut the
    checkpoint: that epoch is trained again)."""

    def __init__(self, checkpoint, log):
        super().__init__()
        self.checkpoint, self.log = checkpoint, log

    def on_train_begin(self, logs=None):
        done = _restored_epochs(self.checkpoint)
        if not done or not os.path.isfile(self.log):
            return
        import csv

        with open(self.log, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) < done]
        with open(self.log + ".tmp", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(kept)
        os.replace(self.log + ".tmp", self.log)


def fit_with_checkpoints(model, train_ds, config, out, verbose):
    """``model.fit`` for ``config["epochs"]`` passes over ``train_ds`` (finite, batched; or
    ``config["steps_per_epoch"]`` batches of it repeated), logging every epoch to ``out/log.csv`` and
    checkpointing weights, optimizer state and epoch in ``out/checkpoint`` (restored from
    there first when it exists: a resumed run)."""
    checkpoint = os.path.join(out, CHECKPOINT)
    # One iterator over the repeated data for the whole run: epoch e sees the e-th
    # reshuffle and the crops drawn next, whatever fit does between epochs, and a resumed
    # run skips (computes and drops) the batches of the epochs it has finished, so it
    # trains on the batches the uninterrupted run would have. (Not under a tf.distribute
    # strategy: there Keras first reads a batch of a throwaway iterator, which on a
    # resumed run runs the skip once more and moves the shuffle and crop random state.)
    steps = config["steps_per_epoch"] or int(train_ds.cardinality())
    if steps < 1:  # unknown (e.g. filtered) or infinite: an epoch has no end
        raise ValueError("the training data's number of batches is unknown or infinite; "
                         "set steps_per_epoch in the recipe")
    train_ds = train_ds.repeat().skip(_restored_epochs(checkpoint) * steps)
    callbacks = [
        _TrimLog(checkpoint, os.path.join(out, "log.csv")),
        _EpochSeconds(),  # before CSVLogger, which writes the logs it leaves
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv"), append=True),
        # restores weights, optimizer state and epoch when a checkpoint exists (--resume)
        # and saves them after every epoch (after the log row: a kill between the two
        # repeats the epoch, whose row _TrimLog drops), keeping the previous checkpoint
        # for a latest one cut while written; managed_run deletes them once the run is
        # complete
        keras.callbacks.BackupAndRestore(checkpoint, delete_checkpoint=False,
                                         double_checkpoint=True),
    ]
    model.fit(train_ds, epochs=config["epochs"], steps_per_epoch=steps,
              callbacks=callbacks, shuffle=False, verbose=verbose)


def _logged_seconds(log):
    """Sum of the ``seconds`` column of log.csv: the training time over all sessions."""
    import csv

    with open(log, newline="") as f:
        return sum(float(row["seconds"]) for row in csv.DictReader(f))


def _run(config, out, strategy_name, segmentation, verbose):
    """Train, evaluate and write every file of the run into the directory ``out``."""
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    keras.utils.set_random_seed(config["seed"])
    strategy = make_strategy(strategy_name)
    (x_train, y_train), (x_test, y_test) = load_data(config["dataset"], config["subset"],
                                                   config["test_subset"])
    batch = config["batch_size"]
    train_ds = data.pixel_dataset(x_train, y_train, batch, shuffle=True, seed=config["seed"],
                                  augment=config["augment"],
                                  crop_padding=config["crop_padding"])
    test_ds = data.pixel_dataset(x_test, y_test, 256)
    steps = config["steps_per_epoch"] or int(np.ceil(len(x_train) / batch))
    with strategy.scope():
        model = models.get(config["model"], input_shape=x_train.shape[1:],
                           **config["overrides"])
        initialised = (init_from_run(model, config["init_from"]) if config["init_from"]
                       else None)
        compile_model(model, config, steps, segmentation)
    fit_with_checkpoints(model, train_ds, config, out, verbose)
    seconds = _logged_seconds(os.path.join(out, "log.csv"))
    metrics = model.evaluate(test_ds, return_dict=True, verbose=0)
    weights = os.path.join(out, f"{config['model']}.weights.h5")
    model.save_weights(weights)
    r = report.parameter_report(model)
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "epochs": config["epochs"],
        "strategy": strategy_name,
        "replicas": strategy.num_replicas_in_sync,
        "train_seconds": round(seconds, 1),
        "test_examples": len(x_test),
        "test_accuracy": round(float(metrics["accuracy"]), 4),
        "test_loss": round(float(metrics["loss"]), 4),
        "params": r.params,
        "macs": r.macs,
        "weights": os.path.basename(weights),
    }
    if segmentation:
        result["test_miou"] = round(float(metrics["miou"]), 4)
    if initialised:
        result["init_from"] = {"run": config["init_from"], "layers": initialised}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _flag(text):
    """``true``/``false`` (also 1/0, yes/no) for boolean recipe keys on the command line."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in value:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value[text.lower()]


def recipe_from_args(args, defaults, parser=None):
    """The recipe of ``--config`` (if given) with every recipe flag given overriding it.
    A config that cannot be read, or is not a JSON object, is a usage error
    (``parser.error``: the message and exit status 2; ValueError without a parser)."""
    config = {}
    if args.config:
        try:
            with open(args.config) as f:
                loaded = json.load(f)
            if not isinstance(loaded, dict):
                kind = {list: "array", str: "string", bool: "boolean", int: "number",
                        float: "number", type(None): "null"}.get(type(loaded), "value")
                raise ValueError(f"it holds a JSON {kind}, not an object of recipe keys")
        except (OSError, ValueError) as error:  # (json.JSONDecodeError is a ValueError)
            message = f"cannot use --config {args.config!r}: {error}"
            if parser is None:
                raise ValueError(message) from None
            parser.error(message)
        config.update(loaded)
    config.update({k: getattr(args, k) for k in defaults
                   if getattr(args, k, None) is not None})
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON recipe (keys as in DEFAULTS)")
    parser.add_argument("--out", required=True, help="new output directory")
    parser.add_argument("--strategy", default="default", choices=STRATEGIES)
    parser.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity (progress bar)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run of --out from its last checkpoint")
    for key, value in DEFAULTS.items():
        if isinstance(value, dict):
            continue
        kind = (_flag if isinstance(value, bool) else type(value) if value is not None
                else str if key in ("model", "dataset", "augment", "init_from") else int)
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=None)
    args = parser.parse_args(argv)
    config = recipe_from_args(args, DEFAULTS, parser)
    if not config.get("model") and not args.resume:
        parser.error("give --model or a --config with a model")
    result = train(config, args.out, args.strategy, args.verbose, resume=args.resume)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
