"""The model registry: user-facing names ``<family>_<size>`` -> builder + arguments.

Names are API: ``resnet_8`` and ``kron_resnet_8`` share a topology and differ only
in the convolution. Weights live in `kronecker_zoo.weights` (a manifest), never here.
"""

import collections
import dataclasses
import difflib
import inspect
import itertools
import os
import re
import warnings

import numpy as np

from kronecker_zoo import weights as weight_registry
from kronecker_zoo.models.context_net import context_net, kron_context_net
from kronecker_zoo.models.dilated_fcn import dilated_fcn
from kronecker_zoo.models.blocks import PIXEL_RANGE
from kronecker_zoo.models.transfer import is_head_layer, transfer_weights
from kronecker_zoo.models.pool_segnet import pool_segnet
from kronecker_zoo.models.resnet import drn, kron_resnet, lowrank_resnet, resnet, separable_resnet
from kronecker_zoo.models.students import STUDENTS, student_builder
from kronecker_zoo.validation import positive_int

TASKS = ("classification", "segmentation")
# Arguments `get` sets itself; never size-defining overrides.
_GET_ARGS = ("input_shape", "num_classes", "include_top", "name")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registered model: ``builder(**size_args, **overrides)``."""

    name: str
    family: str
    task: str
    builder: object
    size_args: dict
    description: str
    input_range: tuple = PIXEL_RANGE  # raw pixel values the model takes (min, max)

    @property
    def input_shape(self):
        """The default ``(height, width, channels)`` `get` builds (the builder's default)."""
        return tuple(_defaults(self.builder)["input_shape"])


_RESNET_SIZES = {"8": {"depth": 8}, "20": {"depth": 20}}
_CONTEXT_SIZES = {"basic": {"variant": "basic"}, "large": {"variant": "large"}}
_CONTEXT_ABLATION_SIZES = {"frontend": {"variant": "frontend"}, **_CONTEXT_SIZES}
_FCN_SIZES = {"small": {"width": 16}, "base": {"width": 32}}

FAMILIES = {
    "resnet": ("classification", resnet, _RESNET_SIZES,
               "dense ResNet baseline (3x3 Conv2D)"),
    "kron_resnet": ("classification", kron_resnet, _RESNET_SIZES,
                    "ResNet with factored 9x9 KroneckerConv2D (rank 4)"),
    "lowrank_resnet": ("classification", lowrank_resnet, _RESNET_SIZES,
                       "ResNet with rank-r 3x3 LowRankConv2D at the Kronecker budget"),
    "separable_resnet": ("classification", separable_resnet, _RESNET_SIZES,
                         "ResNet with depthwise-separable 3x3 convolutions"),
    "drn": ("classification", drn, _RESNET_SIZES,
            "dilated ResNet, DRN-C style (dilated last stage, degridding layers)"),
    "context_net": ("segmentation", context_net, _CONTEXT_ABLATION_SIZES,
                    "front end (class scores) + Yu & Koltun context module at C = classes, "
                    "identity-initialised (frontend: no module)"),
    "kron_context_net": ("segmentation", kron_context_net, _CONTEXT_SIZES,
                         "front end + Kronecker-factored context module, identity-initialised"),
    "dilated_fcn": ("segmentation", dilated_fcn, _FCN_SIZES,
                    "dilated residual FCN, no pooling or striding (translation-equivariant)"),
    "pool_segnet": ("segmentation", pool_segnet, _FCN_SIZES,
                    "pooling encoder-decoder with skips (not translation-equivariant)"),
}

MODELS = {
    f"{family}_{size}": ModelSpec(f"{family}_{size}", family, task, builder, dict(args),
                                  f"{description}; {size}")
    for family, (task, builder, sizes, description) in FAMILIES.items()
    for size, args in sizes.items()
}



def _student_spec(name, teacher, method, layers):
    """A student (students.py): the teacher's builder, size and task, layers factorized."""
    t = MODELS[teacher]
    builder = student_builder(t.builder, layers, set(_GET_ARGS) | set(t.size_args))
    return ModelSpec(name, f"{teacher}_student", t.task, builder,
                     dict(t.size_args), f"{teacher} compressed by compress.factorize "
                     f"(method={method!r}) and distilled; {len(layers)} layers factorized",
                     t.input_range)


MODELS.update({name: _student_spec(name, *entry) for name, entry in STUDENTS.items()})


def _choices(values):
    return ", ".join(repr(v) for v in values)


def spec(name):
    """The `ModelSpec` of a registered name; unknown names list the valid ones."""
    if name not in MODELS:
        close = difflib.get_close_matches(str(name), MODELS, n=3)
        hint = f" Did you mean {_choices(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Valid names: {_choices(MODELS)}")
    return MODELS[name]


def list_models(task=None, pretrained=False):
    """Registered model names, optionally only one ``task`` and/or only those with weights."""
    if task is not None and task not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid tasks: {_choices(TASKS)} (or None)")
    if not isinstance(pretrained, (bool, np.bool_)):
        raise ValueError(f"`pretrained` must be True or False. Received: pretrained={pretrained!r}")
    names = [n for n, s in MODELS.items() if task is None or s.task == task]
    if pretrained:
        names = [n for n in names if weight_registry.published(n)]
    return names


def valid_overrides(name):
    """Keyword arguments `get` accepts as ``**overrides`` for model ``name``."""
    s = spec(name)
    params = inspect.signature(s.builder).parameters
    return sorted(p for p in params if p not in _GET_ARGS and p not in s.size_args)


def get(name, /, weights=None, input_shape=None, num_classes=None, include_top=True,
        fresh_head=False, weights_sha256=None, **overrides):
    """Builds registered model ``name`` as a plain functional `keras.Model`.

    Args:
        name: str (positional). A name from `list_models()`, e.g. `"kron_resnet_8"`.
            The keyword ``name=`` is the Keras model's name, as in keras.applications
            (default: the registry name), e.g. to use two of them in one model.
        weights: `None` (random init), a published tag (see
            `list_models(pretrained=True)`; SHA-256 checked, downloaded when the
            packaged file is missing or damaged and the manifest has a ``url``), or a
            path to a `.weights.h5` file.
        input_shape: `(height, width, channels)`; height/width may be `None`.
            Defaults to the family's default (28x28x1 classification, 64x64x1
            segmentation).
        num_classes: int. Classes of the head. Defaults to 10 (classification) or
            11 (segmentation: background + 10).
        include_top: bool. `False` returns the backbone (last feature map).
        fresh_head: bool. With ``weights``: `True` leaves the head freshly
            initialised; `False` (default) copies the head from the weights when
            its shape matches (same ``num_classes``). A head of another shape is
            always fresh.
        weights_sha256: hex SHA-256 the file given by path must have (ValueError
            otherwise). Published tags are checked against the manifest.
        **overrides: builder arguments that do not fix the size (see
            `valid_overrides(name)`), e.g. `rank=2` for `kron_resnet_8`.

    Loading: a weights file is loaded into the architecture it was saved from. Published
    weights were trained with the default head and input: they are loaded into that
    architecture (with ``overrides``) and, when another head, no head or other input
    channels are asked for, copied by layer name into the model built (see
    `transfer_weights`: a first convolution with other input channels is adapted). A
    file given by path is loaded directly into the model built when its variables have
    that model's shapes (a file saved from exactly this configuration, e.g. after
    fine-tuning with ``num_classes=5``), else treated like a published file (saved from
    the default head and input). The choice is made from the file's variable shapes
    before loading. Weights that do not fit raise a ValueError naming the file and the
    model.

    Returns:
        A `keras.Model` taking raw pixel values in [0, 255] (`ModelSpec.input_range`).
        Saved with ``model.save("m.keras")``, it loads with
        ``keras.saving.load_model`` only after ``import kronecker_zoo``, which
        registers the zoo layers (without it Keras reports that it cannot locate a
        class such as ``KroneckerConv2D``).
    """
    s = spec(name)
    model_name = overrides.pop("name", name)
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"`name` (the Keras model's name) must be a non-empty str. "
                         f"Received: name={model_name!r}")
    bad = sorted(set(overrides) - set(valid_overrides(name)))
    if bad:
        fixed = [k for k in bad if k in s.size_args]
        why = (f" {_choices(fixed)} is fixed by the name {name!r}: pick another size of "
               f"{s.family!r} or call kronecker_zoo.models.{s.builder.__name__}() directly."
               if fixed else "")
        valid = valid_overrides(name)
        raise ValueError(f"Invalid override(s) {_choices(bad)} for {name!r}.{why} " + (
            f"Valid overrides: {_choices(valid)}" if valid else
            f"{name!r} takes none (its architecture is fixed by its plan)"))
    if not include_top and num_classes is not None:
        raise ValueError("`num_classes` sets the size of the head, but include_top=False "
                         f"builds no head. Received: num_classes={num_classes!r}")
    for flag, value in (("include_top", include_top), ("fresh_head", fresh_head)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"`{flag}` must be True or False. Received: {flag}={value!r}")
    include_top, fresh_head = bool(include_top), bool(fresh_head)
    kwargs = dict(s.size_args, **overrides)
    if input_shape is not None:
        try:
            kwargs["input_shape"] = tuple(input_shape)
        except TypeError:  # not a sequence: the builder names the problem
            kwargs["input_shape"] = input_shape
    if num_classes is not None:
        kwargs["num_classes"] = positive_int(num_classes, "num_classes")
    if weights is None:
        if weights_sha256 is not None:
            raise ValueError("`weights_sha256` checks a weights file given by path; "
                             "received weights=None.")
        return s.builder(include_top=include_top, name=model_name, **kwargs)
    path, entry = _weights_file(name, weights, weights_sha256)
    model = s.builder(include_top=include_top, name=model_name, **kwargs)
    _load_weights(model, s, path, entry, kwargs, include_top, fresh_head)
    return model


def _defaults(builder):
    """The builder's defaults of the arguments `get` may change for a pretrained file."""
    params = inspect.signature(builder).parameters
    return {k: params[k].default for k in ("input_shape", "num_classes") if k in params}


def _same(a, b):
    return (tuple(a) == tuple(b)) if isinstance(a, (tuple, list)) else a == b


def _describe(kwargs):
    return ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items())) or "no overrides"


def _float_shapes(shapes_and_dtypes):
    return sorted(tuple(int(d) for d in shape) for shape, dtype in shapes_and_dtypes
                  if np.dtype(dtype).kind == "f")


# What h5py raises for a file it cannot read: OSError, or RuntimeError where its object
# headers are damaged (`_file_shapes` turns the KeyError of a damaged message into OSError).
_UNREADABLE = (OSError, RuntimeError)


def _is_model_variable(key):
    """Whether the ``.weights.h5`` dataset ``key`` is a variable of the model: under
    ``layers/`` (or the model's own ``vars/``), not the optimizer's state that a file
    saved after ``fit`` also holds (``optimizer/vars/...``)."""
    return key.startswith(("layers/", "vars/")) and "vars/" in f"/{key}"


def _file_shapes(path):
    """Sorted shapes of the floating-point model variables stored in a ``.weights.h5``
    file (OSError if it is not a readable HDF5 file, RuntimeError from h5py where its
    object headers are damaged)."""
    import h5py

    found = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda key, item: found.append((item.shape, item.dtype))
                         if isinstance(item, h5py.Dataset) and _is_model_variable(key)
                         else None)
    except KeyError as error:  # h5py: a damaged object message ("bad version number ...")
        raise OSError(str(error)) from error
    return _float_shapes(found)


def _model_shapes(model):
    return _float_shapes((v.shape, v.dtype) for v in model.weights)


def _load_weights(model, s, path, entry, kwargs, include_top, fresh_head):
    """Loads ``path`` into ``model`` (see `get`, "Loading"); ValueError if it does not fit.

    The file is loaded into the architecture it was saved from, decided before loading:
    a published file was saved from the default head and input (with the manifest's
    overrides); a file given by path from the model built when its variables have the
    model's shapes, else from the default head and input. When that is not the model
    built, the weights are copied into it by layer name (`transfer_weights`).
    """
    defaults = _defaults(s.builder)
    user = {k: v for k, v in kwargs.items() if k not in s.size_args}
    if not include_top:
        user["include_top"] = False
    file_shapes = None
    if entry is not None:
        as_built = include_top and all(_same(kwargs.get(k, d), d) for k, d in defaults.items())
    else:
        try:
            file_shapes = _file_shapes(path)
        except _UNREADABLE as error:
            raise _mismatch(s.name, path, entry, user, [("the file", error)]) from None
        as_built = file_shapes == _model_shapes(model)
    if as_built:
        target, what = model, f"the model built ({_describe(user)})"
        head = {layer.name: layer.get_weights() for layer in model.layers
                if fresh_head and is_head_layer(layer.name)}
    else:
        file_kwargs = {k: v for k, v in kwargs.items() if k not in defaults}
        target = s.builder(include_top=True, name=s.name, **file_kwargs)
        what, head = "the default head and input", {}
        if file_shapes is not None and file_shapes != _model_shapes(target):
            found = _file_architecture(s, file_kwargs, file_shapes, target)
            if found is not None:  # a user's fine-tuned file: its own head / input channels
                target, what = found
    error = _try_load(target, path)
    if error is not None:
        raise _mismatch(s.name, path, entry, user, [(what, error)])
    if target is not model:
        transfer_weights(target, model, fresh_head=fresh_head)
    for layer_name, values in head.items():
        model.get_layer(layer_name).set_weights(values)


def _file_architecture(s, file_kwargs, file_shapes, default):
    """``(model, description)``: ``s``'s model built with the ``num_classes`` and input
    channels of a file saved with others (e.g. after fine-tuning on 3-channel images with
    ``num_classes=5``), found from the variable shapes the file has and the default model
    lacks; ``None`` if none fits."""
    defaults = _defaults(s.builder)
    extra = collections.Counter(file_shapes) - collections.Counter(_model_shapes(default))
    extra = [shape for shape in extra if shape]
    options = {}
    if "num_classes" in defaults:
        options["num_classes"] = [defaults["num_classes"]] + sorted(
            {shape[-1] for shape in extra} - {defaults["num_classes"]})
    image = defaults.get("input_shape")
    if isinstance(image, tuple) and len(image) == 3:
        options["input_shape"] = [image] + [
            (*image[:2], c) for c in sorted({shape[-2] for shape in extra if len(shape) == 4})
            if c != image[-1]]
    for values in itertools.product(*options.values()):
        changed = {k: v for k, v in zip(options, values) if not _same(v, defaults[k])}
        if not changed:
            continue
        candidate = s.builder(include_top=True, name=s.name, **changed, **file_kwargs)
        if _model_shapes(candidate) == file_shapes:
            return candidate, f"{_describe(changed)} (the file's)"
    return None


def _try_load(model, path):
    """``model.load_weights(path)``: `None`, or the error (warnings only kept on success)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, KeyError) + _UNREADABLE as error:
            return error
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return None


def _summary(error):
    """The informative part of a Keras loading error, on one line."""
    text = str(error)
    match = re.search(r"Example error message for object <(.*?)>:\s*(.*?)\s*"
                      r"(?:List of objects that could not be loaded|$)", text, re.S)
    if match:
        text = f"{match.group(2).split(' Target variable:')[0]} ({match.group(1)})"
    text = " ".join(text.split())
    return text[:400] + ("..." if len(text) > 400 else "")


def _mismatch(name, path, entry, user, tried):
    if any(isinstance(e, _UNREADABLE) for _, e in tried):
        error = next(e for _, e in tried if isinstance(e, _UNREADABLE))
        return ValueError(
            f"Cannot read the weights file {os.fspath(path)!r} for {name!r}: it is truncated, "
            f"corrupted or not a Keras .weights.h5 file ({_summary(error)}).")
    if entry is not None:
        config = entry.get("config", {})
        trained = config.get("overrides") or {}
        return ValueError(
            f"The published {entry.get('dataset', '')!r} weights of {name!r} "
            f"({entry['file']}) were trained on {config.get('model', name)!r} with "
            f"{_describe(trained)} (and the default head and input); they do not fit "
            f"{name!r} built with {_describe(user)}: {_summary(tried[0][1])} Drop the "
            "overrides that change weight shapes, or pass weights=None.")
    known = weight_registry.find_published(weight_registry.sha256_of(path))
    origin = (f" It is the published {known[1]!r} weights file of {known[0]!r}: load it "
              f"with models.get({known[0]!r}, weights={known[1]!r})." if known else
              " Was it saved from another model, or with other overrides?")
    return ValueError(
        f"The weights file {os.fspath(path)!r} does not match the architecture of {name!r} "
        f"built with {_describe(user)}: {_summary(tried[0][1])}.{origin}")


def _weights_file(name, weights, weights_sha256):
    """``(path, manifest entry or None)`` behind ``weights`` (a published tag or a path)."""
    tags = weight_registry.published(name)
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(".weights.h5"):
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"Weight file not found: {weights}")
        if weights_sha256 is not None:
            weight_registry.verified_path(
                weights, weights_sha256,
                advice="Check that it is the file you meant, or drop `weights_sha256`.")
        return weights, None
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(".keras"):
        raise ValueError(
            f"weights={os.fspath(weights)!r} is a whole saved model (.keras), not a weights "
            "file: load it with keras.saving.load_model (after `import kronecker_zoo`), or "
            "pass a .weights.h5 file (model.save_weights).")
    if not isinstance(weights, str) or weights not in tags:
        raise ValueError(
            f"Unknown weights {weights!r} for {name!r}. Valid: None, a path to a "
            f".weights.h5 file{', ' + _choices(tags) if tags else ''}"
            f"{'' if tags else ' (no weights are published for this model yet)'}"
        )
    entry = tags[weights]
    if weights_sha256 is not None and (
            weight_registry.check_sha256(weights_sha256) != entry["sha256"]):
        raise ValueError(
            f"`weights_sha256` {weights_sha256} is not the SHA-256 of the published "
            f"{weights!r} weights of {name!r} ({entry['sha256']}); published files are "
            "checked against the manifest, so it is not needed.")
    return weight_registry.entry_path(entry), entry
