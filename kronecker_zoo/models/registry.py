"""The model registry: user-facing names ``<family>_<size>`` -> builder + arguments.

Names are API: ``resnet_8`` and ``kron_resnet_8`` share a topology and differ only
in the convolution. Weights live in `kronecker_zoo.weights` (a manifest), never here.
"""

import dataclasses
import difflib
import inspect
import os

from kronecker_zoo import weights as weight_registry
from kronecker_zoo.models.context_net import context_net, kron_context_net
from kronecker_zoo.models.dilated_fcn import dilated_fcn
from kronecker_zoo.models.finetune import transfer_weights
from kronecker_zoo.models.pool_segnet import pool_segnet
from kronecker_zoo.models.resnet import drn, kron_resnet, lowrank_resnet, resnet, separable_resnet

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


_RESNET_SIZES = {"8": {"depth": 8}, "20": {"depth": 20}}
_CONTEXT_SIZES = {"basic": {"variant": "basic"}, "large": {"variant": "large"}}
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
    "context_net": ("segmentation", context_net, _CONTEXT_SIZES,
                    "front end + Yu & Koltun context module, identity-initialised"),
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
    names = [n for n, s in MODELS.items() if task is None or s.task == task]
    if pretrained:
        names = [n for n in names if weight_registry.published(n)]
    return names


def valid_overrides(name):
    """Keyword arguments `get` accepts as ``**overrides`` for model ``name``."""
    s = spec(name)
    params = inspect.signature(s.builder).parameters
    return sorted(p for p in params if p not in _GET_ARGS and p not in s.size_args)


def get(name, weights=None, input_shape=None, num_classes=None, include_top=True, **overrides):
    """Builds registered model ``name`` as a plain functional `keras.Model`.

    Args:
        name: str. A name from `list_models()`, e.g. `"kron_resnet_8"`.
        weights: `None` (random init), a published tag (see
            `list_models(pretrained=True)`), or a path to a `.weights.h5` file.
        input_shape: `(height, width, channels)`; height/width may be `None`.
            Defaults to the family's default (28x28x1 classification, 64x64x1
            segmentation).
        num_classes: int. Classes of the head. Defaults to 10 (classification) or
            11 (segmentation: background + 10).
        include_top: bool. `False` returns the backbone (last feature map).
        **overrides: builder arguments that do not fix the size (see
            `valid_overrides(name)`), e.g. `rank=2` for `kron_resnet_8`.

    Returns:
        A `keras.Model` taking raw pixel values in [0, 255].
    """
    s = spec(name)
    bad = sorted(set(overrides) - set(valid_overrides(name)))
    if bad:
        fixed = [k for k in bad if k in s.size_args]
        why = (f" {_choices(fixed)} is fixed by the name {name!r}: pick another size of "
               f"{s.family!r} or call kronecker_zoo.models.{s.builder.__name__}() directly."
               if fixed else "")
        raise ValueError(f"Invalid override(s) {_choices(bad)} for {name!r}.{why} "
                         f"Valid overrides: {_choices(valid_overrides(name))}")
    if not include_top and num_classes is not None:
        raise ValueError("`num_classes` sets the size of the head, but include_top=False "
                         f"builds no head. Received: num_classes={num_classes!r}")
    kwargs = dict(s.size_args, **overrides)
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int. Received: {num_classes!r}")
        kwargs["num_classes"] = num_classes
    model = s.builder(include_top=include_top, name=name, **kwargs)
    if weights is not None:
        path = _weights_path(name, weights)
        # Load into the architecture the weights were trained with (default head and
        # input channels), then copy by layer name: another head stays initialised,
        # other input channels adapt the first conv (see models.finetune).
        source_kwargs = {k: v for k, v in kwargs.items()
                         if k not in ("input_shape", "num_classes")}
        source = s.builder(include_top=True, name=name, **source_kwargs)
        try:
            source.load_weights(path)
        except ValueError:
            model.load_weights(path)  # a file saved from exactly this configuration
        else:
            transfer_weights(source, model)
    return model


def _weights_path(name, weights):
    """The verified file behind ``weights`` (a published tag or a .weights.h5 path)."""
    tags = weight_registry.published(name)
    if isinstance(weights, (str, os.PathLike)) and str(weights).endswith(".weights.h5"):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"Weight file not found: {weights}")
        return weights
    if weights not in tags:
        raise ValueError(
            f"Unknown weights {weights!r} for {name!r}. Valid: None, a path to a "
            f".weights.h5 file{', ' + _choices(tags) if tags else ''}"
            f"{'' if tags else ' (no weights are published for this model yet)'}"
        )
    entry = tags[weights]
    return weight_registry.verified_path(weight_registry.file_path(entry["file"]),
                                         entry["sha256"])
