"""Factorize a trained Keras model: every eligible ``Conv2D`` / ``Dense`` becomes a
Kronecker (or low-rank) layer initialised with the nearest factorisation of its kernel.

    plan = plan_factorization(model, ratio=5.0)     # per-layer shapes, ranks, errors
    print(plan)
    student = factorize(model, ratio=5.0)           # a new model; `model` is untouched

Eligible: exactly `keras.layers.Conv2D` (channels last, ``groups=1``,
``dilation_rate=1``) and exactly `keras.layers.Dense` on a last axis of more than one
feature. Everything else (BatchNormalization, shortcuts, depthwise and grouped
convolutions, zoo layers, excluded layers) is copied with its weights.
"""

import collections
import functools
import math
import numbers
from typing import NamedTuple

import keras
import numpy as np

from kronecker_zoo import ops as kz_ops
from kronecker_zoo.compress import search
from kronecker_zoo.compress.nearest import nearest_kronecker
from kronecker_zoo.layers import LowRankConv2D
from kronecker_zoo.layers.kronecker_conv import NOMINAL_INPUT_SIZE
from kronecker_zoo.models.factorized import layer_paths, replace_layers

METHODS = ("kronecker", "lowrank")
NOT_A_KERNEL = "not a Conv2D or Dense layer"


class LayerChoice(NamedTuple):
    """How one layer is factorized (``params_*`` include the bias; ``macs_*`` per
    example, over all the layer's calls (a shared layer, or one in a nested model called
    twice, counts each run), the executed count after: `KroneckerConv2D` runs the cheaper execution; a
    convolution whose input size the model leaves open (``None``) is counted at the
    nominal 64x64 `KroneckerConv2D` plans for, a Dense layer over axes of open size per
    vector)."""

    name: str
    layer_type: str  # the new layer's class name
    factors: tuple
    rank: int
    relative_error: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


class Skipped(NamedTuple):
    name: str
    reason: str


class FactorizationPlan(NamedTuple):
    """What `factorize` does to a model; ``str(plan)`` is the per-layer report."""

    method: str
    ratio: float  # requested: count_params() before / after (None: layer_overrides only)
    layers: list  # LayerChoice, in model order
    skipped: list  # Skipped, in model order
    params_before: int
    params_after: int
    macs_before: int  # None: the model's MACs are not countable (open input size,
    macs_after: int   # several inputs); the layers' are, see LayerChoice
    macs_uncounted: tuple = ()  # layers whose MACs the totals leave out (Conv1D, ...)

    def layer_overrides(self):
        """The plan as ``layer_overrides`` (JSON-friendly): ``plan_factorization(model,
        ratio=None, method=plan.method, layer_overrides=plan.layer_overrides())``
        rebuilds exactly this plan, e.g. to rebuild a student's architecture. Keyed by
        layer path (a layer of the model itself: its name)."""
        return {c.name: (
            {"rank": c.rank} if self.method == "lowrank" else  # lowrank fixes the factors
            {"factors": [list(f) for f in c.factors], "rank": c.rank}) for c in self.layers}

    def layer_specs(self):
        """The new layers as `models.factorized.replace_layers` specs (JSON-friendly):
        ``{path: {"layer": type, "factors": shapes, "rank": r}}``, the architecture of
        the factorized model without its weights."""
        return {c.name: {"layer": c.layer_type, "factors": [list(f) for f in c.factors],
                         "rank": c.rank} for c in self.layers}

    def __str__(self):
        factors = [" (x) ".join("x".join(str(v) for v in f) for f in c.factors)
                   for c in self.layers]
        # columns as wide as their longest entry: nested paths and 3-factor splits whole
        name_width = max([22] + [len(c.name) for c in self.layers]
                         + [len(s.name) for s in self.skipped])
        factor_width = max([25] + [len(f) for f in factors])
        header = (f"{'layer':{name_width}s} {'new layer':15s} "
                  f"{'factors (outermost first)':{factor_width}s} "
                  f"{'rank':>4s} {'rel.err':>7s} {'params':>17s} {'MACs':>21s}")
        macs = ("not countable (open input size or several inputs)"
                if self.macs_before is None else
                f"{self.macs_before:,} -> {self.macs_after:,}"
                + (f" (not counted: {', '.join(self.macs_uncounted)})"
                   if self.macs_uncounted else ""))
        lines = [f"factorize(method={self.method!r}, ratio={self.ratio}): "
                 f"{self.params_before:,} -> {self.params_after:,} parameters "
                 f"({self.params_before / max(self.params_after, 1):.2f}x), MACs "
                 f"{macs}", header, "-" * len(header)]
        for c, f in zip(self.layers, factors):
            lines.append(f"{c.name:{name_width}s} {c.layer_type:15s} {f:{factor_width}s} "
                         f"{c.rank:4d} {c.relative_error:7.3f} "
                         f"{c.params_before:>8,}->{c.params_after:<8,} "
                         f"{c.macs_before:>10,}->{c.macs_after:<10,}")
        for s in self.skipped:
            lines.append(f"{s.name:{name_width}s} kept: {s.reason}")
        return "\n".join(lines)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"factorize needs a keras.Model. Received: {type(model).__name__}")
    if not isinstance(model, keras.Sequential) and type(model).__name__ != "Functional":
        raise ValueError(
            f"factorize works on Sequential and functional models; {type(model).__name__} "
            "is a subclassed model, whose call() Keras cannot rewrite. Build it with the "
            "functional API (keras.Model(inputs, outputs)) or keras.Sequential.")
    if not model.built or not model.inputs:
        raise ValueError(f"Model {model.name!r} is not built: give it an Input (or call "
                         "build) so that every layer's input shape is known")


def _layers(model):
    """``(path, layer)`` for every layer, nested Sequential/functional models flattened
    (and checked)."""
    return layer_paths(model, visit_model=_check_model)


def _input_shape(layer):
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError):
        raise ValueError(f"Layer {layer.name!r} is called outside the model graph; its "
                         "input shape is unknown") from None


def _runs(model):
    """``({path: times the layer runs in one forward pass}, {path: its input shapes})``
    for every layer of ``model`` (paths as `_layers` gives them): a layer called twice,
    or a layer of a nested model called twice, runs twice."""
    from kronecker_zoo import graph

    runs, shapes = {}, collections.defaultdict(set)

    def visit(m, prefix, times):
        calls = graph.layer_calls(m)
        for layer in m.layers:
            path = prefix + layer.name
            mine = [c for c in calls if c.layer is layer]
            if isinstance(layer, keras.Model):
                visit(layer, path + "/", times * len(mine))
            else:
                runs[path] = times * len(mine)
                shapes[path].update(tuple(c.inputs[0].shape) for c in mine if c.inputs)

    visit(model, "", 1)
    return runs, shapes


def _nested_models(model, prefix=""):
    """The paths of the models nested in ``model`` (``"backbone"``, ``"backbone/block"``)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield prefix + layer.name
            yield from _nested_models(layer, prefix + layer.name + "/")


def _eligibility(layer, excluded=False):
    """``None`` if ``layer`` can be factorized, else why not (``excluded``: the caller
    keeps it, which a channels_first layer then needs)."""
    if type(layer) in (keras.layers.Conv2D, keras.layers.Dense):
        if excluded:
            return "excluded by the caller"
        if getattr(layer, "quantization_mode", None) is not None:
            return (f"quantized layer ({layer.quantization_mode}): factorize the float model, "
                    "then quantize")
        if getattr(layer, "lora_enabled", False):
            return "LoRA-enabled layer"
    if type(layer) is keras.layers.Conv2D:
        if layer.data_format != "channels_last":
            raise ValueError(f"Layer {layer.name!r} is channels_first; factorize supports "
                             "channels_last models only (the Keras default); exclude it "
                             "to keep it as it is")
        if layer.groups != 1:
            return f"grouped convolution (groups={layer.groups})"
        if tuple(layer.dilation_rate) != (1, 1):
            return f"dilated convolution (dilation_rate={tuple(layer.dilation_rate)})"
        kh, kw, cin, cout = layer.kernel.shape
        if kh * kw * cin == 1 or cout == 1:
            return "one input value or one output channel per position: nothing to factor"
        return None
    if type(layer) is keras.layers.Dense:
        cin, cout = layer.kernel.shape
        if cin == 1 or cout == 1:
            return "one input or output feature: nothing to factor"
        return None
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return f"subclass {type(layer).__name__} of a Keras layer: its call may differ"
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise convolution"
    if isinstance(layer, keras.layers.Wrapper):
        return f"{type(layer).__name__} wrapper: the layers it wraps are not factorized"
    if (any(hasattr(layer, a) for a in ("kernel", "factor_weights", "depthwise_kernel"))
            or any(w.name.endswith("kernel") or w.name == "embeddings" for w in layer.weights)):
        # LSTM's cell, MultiHeadAttention's projections, Embedding: weight matrices too
        return f"{type(layer).__name__}: only Conv2D and Dense layers are factorized"
    return NOT_A_KERNEL


class _Target(NamedTuple):
    path: str
    layer: object
    kernel: np.ndarray
    input_hw: tuple
    options: list  # search.Option per candidate shape (None with an override)
    macs_before: int  # a Dense layer's per vector
    positions: int  # vectors per example a Dense layer multiplies (1 for a convolution)


def _macs_dense_conv(layer, input_hw):
    kh, kw, cin, cout = layer.kernel.shape
    return kz_ops.dense_conv_macs(input_hw, (kh, kw), cin, cout, tuple(layer.strides),
                                  layer.padding)


def _spectra(kernel, method):
    if method == "kronecker":
        return search.spectra(kernel)
    # low rank: the one shape (kh, 1, in, 1) (x) (1, kw, 1, out), or (in, 1) (x) (1, out)
    if kernel.ndim == 4:
        kh, kw, cin, cout = kernel.shape
        shape = ((kh, 1, cin, 1), (1, kw, 1, cout))
    else:
        shape = ((kernel.shape[0], 1), (1, kernel.shape[1]))
    return search.spectra(kernel, [shape])


def plan_factorization(model, ratio=5.0, method="kronecker", exclude=(), layer_overrides=None,
                       max_relative_macs=None, max_relative_cost=None, runtime=None):
    """Choose, per layer, the factor shapes and rank that `factorize` will use.

    The new model gets at most ``model.count_params() / ratio`` parameters: every eligible
    layer gets the same share ``1 / q`` of its kernel's parameters, with the largest ``q``
    (found by bisection) for which the whole model meets the budget; within its share each
    layer takes the shape and rank of least relative approximation error (fewer MACs
    break ties). Copied layers (BatchNormalization, biases, skipped layers) count in full.
    A Dense layer only takes shapes no dearer in MACs than its matrix (`KroneckerDense`
    always runs factored; a `KroneckerConv2D` runs materialised where that is cheaper).
    Kept with the reason in ``plan.skipped``: grouped, dilated, depthwise, quantized and
    LoRA-enabled layers, wrappers, subclasses of Conv2D / Dense, other layers with weight
    matrices (Conv2DTranspose, SeparableConv2D, LSTM, MultiHeadAttention, Embedding, ...),
    excluded layers.

    Args:
        model: a built Sequential or functional Keras model (never modified).
        ratio: ``count_params()`` before / after, > 1; or ``None`` to factorize exactly
            the layers of ``layer_overrides`` (as they say, no budget).
        method: ``"kronecker"`` (every two-factor shape, `KroneckerConv2D` /
            `KroneckerDense`) or ``"lowrank"`` (`LowRankConv2D`; Dense layers as the
            ``(in, 1) (x) (1, out)`` `KroneckerDense`, i.e. a rank-r product).
        exclude: names of layers to keep as they are (e.g. the classifier head); the
            name of a nested model keeps all its layers.
        layer_overrides: ``{name: {"factors": [...], "rank": r}}`` to fix a layer's
            choice (``"lowrank"``: ``{"rank": r}``); it counts against the budget.
        max_relative_macs: if set, a layer only takes shapes whose factored MACs are at
            most this fraction of the original layer's.
        max_relative_cost: if set, a convolution only takes shapes whose cost on
            ``runtime`` is at most this fraction of the original layer's, by the execution
            planner's measured cost model (`kronecker_zoo.ops.factored_conv_cost` of the
            cheaper lowering, or for "lowrank" its two convolutions, against
            `kronecker_zoo.ops.dense_conv_cost`: MACs as the runtime's kernels tile them,
            grouped convolutions and transposes priced as measured there) rather than by
            MACs. An export that must keep its extra weights within budget may still run
            a layer's dearer lowering (`export.execution.planned_lowerings`). A Dense
            layer's cost is its MACs; ``layer_overrides`` are not capped. Not with
            ``max_relative_macs``.
        runtime: the cost model of ``max_relative_cost``: a key of
            `kronecker_zoo.ops.COST_WEIGHTS` ("litert", "litert_int8", "tensorflow",
            "jax"); default: Keras' backend (others: the "tensorflow" weights).

    Returns:
        `FactorizationPlan`; ``str(plan)`` prints shapes, ranks, errors, params and MACs.

    Raises:
        ValueError: subclassed or unbuilt model, channels_first layers not excluded,
            unknown method or layer names, overrides of excluded or ineligible layers,
            nothing eligible, or a ``ratio`` no choice reaches (the message gives the
            largest reachable ratio).
    """
    _check_model(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: method={method!r}")
    if ratio is None:
        if not layer_overrides:
            raise ValueError("ratio=None factorizes only the layers of layer_overrides, "
                             "and none were given")
    elif isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not ratio > 1:
        raise ValueError(f"ratio (parameters before / after) must be a number > 1, or None "
                         f"with layer_overrides. Received: ratio={ratio!r}")
    for cap_name, cap in (("max_relative_macs", max_relative_macs),
                          ("max_relative_cost", max_relative_cost)):
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, numbers.Real)
                                or not cap > 0):
            raise ValueError(f"{cap_name} must be a number > 0 (a fraction of the original "
                             f"layer's). Received: {cap_name}={cap!r}")
    if max_relative_macs is not None and max_relative_cost is not None:
        raise ValueError("Give max_relative_macs or max_relative_cost, not both "
                         f"(received {max_relative_macs!r} and {max_relative_cost!r})")
    if runtime is not None and runtime not in kz_ops.COST_WEIGHTS:
        raise ValueError(f"runtime must be one of {sorted(kz_ops.COST_WEIGHTS)} (the "
                         f"measured cost models). Received: runtime={runtime!r}")
    if runtime is not None and max_relative_cost is None:
        raise ValueError(f"runtime={runtime!r} prices shapes for max_relative_cost, which "
                         "was not given")
    if isinstance(exclude, str):  # one name
        exclude = (exclude,)
    layer_overrides = dict(layer_overrides or {})
    # A layer shared across nesting levels has several paths: it is planned once, under
    # its first (`canonical`), and any of its paths names it.
    all_paths, first = list(_layers(model)), {}
    canonical = {path: first.setdefault(id(layer), path) for path, layer in all_paths}
    paths = {path: layer for path, layer in all_paths if canonical[path] == path}
    # a nested model named in exclude (by path, or by its name if unique): all its layers
    nested = list(_nested_models(model))
    exclude = list(exclude)
    for name in list(exclude):
        found = [m for m in nested if m == name or m.split("/")[-1] == name]
        if len(found) == 1:
            exclude.remove(name)
            exclude += [canonical[p] for p, _ in all_paths if p.startswith(found[0] + "/")]
        elif len(found) > 1:
            raise ValueError(f"Nested model name {name!r} is ambiguous in model "
                             f"{model.name!r} ({found}): name it by path")
    runs, call_shapes = collections.Counter(), collections.defaultdict(set)
    path_runs, path_shapes = _runs(model)
    for path, times in path_runs.items():
        runs[canonical[path]] += times
        call_shapes[canonical[path]] |= path_shapes[path]
    by_name = collections.defaultdict(list)
    for path in paths:
        by_name[path.split("/")[-1]].append(path)
    names = {name: found[0] for name, found in by_name.items() if len(found) == 1}
    names.update(canonical)  # every path names its layer
    asked = (set(exclude) | set(layer_overrides)) - set(names)
    ambiguous = sorted(n for n in asked if len(by_name.get(n, ())) > 1)
    if ambiguous:
        raise ValueError(f"Layer names {ambiguous} are ambiguous in model {model.name!r} "
                         f"(nested models hold several: "
                         f"{sorted(p for n in ambiguous for p in by_name[n])}); name them by "
                         "path")
    unknown = sorted(asked)
    if unknown:
        raise ValueError(f"No layers named {unknown} in model {model.name!r}")
    excluded = {names.get(n, n) for n in exclude}
    overrides = {names.get(n, n): v for n, v in layer_overrides.items()}

    targets, skipped = [], []
    conflicting = sorted(set(overrides) & excluded)
    if conflicting:
        raise ValueError(f"Layers {conflicting} are both excluded and in layer_overrides: "
                         "keep them or fix their factorisation, not both")
    for path, layer in paths.items():
        reason = _eligibility(layer, excluded=path in excluded)
        if reason is not None and path in overrides:
            raise ValueError(f"layer_overrides[{path!r}]: this layer cannot be factorized "
                             f"({'a layer without a kernel' if reason == NOT_A_KERNEL else reason})")
        if reason is None and ratio is None and path not in overrides:
            reason = "not in layer_overrides (ratio=None)"
        if reason is not None:
            if reason != NOT_A_KERNEL:  # BatchNormalization & co. are simply copied
                skipped.append(Skipped(path, reason))
            continue
        if len(call_shapes[path]) > 1:
            raise ValueError(
                f"Layer {path!r} is called on inputs of different shapes "
                f"{sorted(call_shapes[path], key=str)}: its MACs and the choice of its "
                "factors depend on the input size. Exclude it (exclude=[...])")
        input_shape = _input_shape(layer)
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        conv = kernel.ndim == 4
        input_hw, positions = None, 1
        if conv:  # an open size (a fully convolutional model): the nominal one
            input_hw = tuple(NOMINAL_INPUT_SIZE if d is None else int(d)
                             for d in input_shape[1:3])
        elif None not in tuple(input_shape[1:-1]):  # Dense over (N, ..., features)
            positions = math.prod(int(d) for d in input_shape[1:-1])
        targets.append(_Target(
            path, layer, kernel, input_hw,
            None if path in overrides else search.options(
                _spectra(kernel, method), input_hw, tuple(getattr(layer, "strides", (1, 1))),
                getattr(layer, "padding", "same")),
            _macs_dense_conv(layer, input_hw) if conv else kernel.size, positions))
    if not targets:
        raise ValueError(f"Nothing to factorize in model {model.name!r}: no eligible Conv2D "
                         f"or Dense layer ({'; '.join(f'{s.name}: {s.reason}' for s in skipped) or 'no layers with weights'})")

    params_before = int(model.count_params())
    fixed = params_before - sum(t.kernel.size for t in targets)  # copied + biases
    fixed_choices = {t.path: _override_choice(t, overrides[t.path], method)
                     for t in targets if t.path in overrides}
    budget = params_before / ratio if ratio is not None else math.inf

    caps = {t.path: _cost_cap(t, method, max_relative_macs, max_relative_cost, runtime)
            for t in targets if t.path not in fixed_choices}

    def choose(q):
        chosen = []
        for t in targets:
            if t.path in fixed_choices:
                chosen.append(fixed_choices[t.path])
                continue
            chosen.append(search.best_candidate(t.options, int(t.kernel.size / q),
                                                *caps[t.path]))
        return chosen

    def total(chosen):
        return fixed + sum(c.params if c is not None else t.kernel.size
                           for t, c in zip(targets, chosen))

    smallest = fixed + sum(
        fixed_choices[t.path].params if t.path in fixed_choices
        else min(o.params_per_rank for o in t.options)
        for t in targets)
    if smallest > budget:
        raise ValueError(
            f"ratio={ratio:g} is out of reach for model {model.name!r} with "
            f"method={method!r}: at most {_floor2(params_before / smallest):.2f}x (every eligible "
            f"layer at its smallest factorisation; {fixed:,} parameters are copied as they "
            "are). Choose a smaller ratio, or exclude fewer layers.")
    lo, hi = 1.0, 2.0
    while total(choose(hi)) > budget:
        lo, hi = hi, hi * 2
        if hi > 1e9:  # the cap leaves too few shapes
            cap = _cap_text(max_relative_macs, max_relative_cost, runtime)
            raise ValueError(f"ratio={ratio:g} is out of reach for model {model.name!r} with "
                             f"{cap}: too few layers have a shape that cheap. Raise the cap "
                             "or lower the ratio.")
    for _ in range(40):  # the largest per-layer share that meets the budget
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if total(choose(mid)) <= budget else (mid, hi)
    chosen = choose(hi)

    layers = []
    for t, c in zip(targets, chosen):
        if c is None:
            skipped.append(Skipped(t.path, "no shape within " + _cap_text(
                max_relative_macs, max_relative_cost, runtime)))
            continue
        bias = t.layer.bias.shape[0] if t.layer.use_bias else 0
        new_type = ("KroneckerDense" if t.kernel.ndim == 2 else
                    "LowRankConv2D" if method == "lowrank" else "KroneckerConv2D")
        macs_after = c.macs
        if new_type == "LowRankConv2D":
            macs_after = _lowrank_macs(t, c.rank)
        elif new_type == "KroneckerConv2D":
            macs_after = min(c.macs, t.macs_before)  # execution="auto" runs the cheaper
        layers.append(LayerChoice(t.path, new_type, c.factors, c.rank, c.relative_error,
                                  t.kernel.size + bias, c.params + bias,
                                  t.macs_before * t.positions * runs[t.path],
                                  macs_after * t.positions * runs[t.path]))
    order = list(paths)
    layers.sort(key=lambda c: order.index(c.name))
    skipped.sort(key=lambda s: order.index(s.name))
    params_after = params_before - sum(c.params_before - c.params_after for c in layers)
    macs_total, uncounted = _model_macs(model)  # as kronecker_zoo.report counts them
    macs_after = None if macs_total is None else macs_total - sum(
        c.macs_before - c.macs_after for c in layers)
    return FactorizationPlan(method, None if ratio is None else float(ratio), layers,
                             skipped, params_before, params_after, macs_total, macs_after,
                             uncounted)


def _floor2(x):
    """``x`` rounded down to two decimals (a reachable ratio must stay reachable)."""
    return math.floor(x * 100) / 100


def _cap_text(max_relative_macs, max_relative_cost, runtime):
    if max_relative_macs is None and max_relative_cost is None:
        return "the Dense rule (no KroneckerDense dearer in MACs than its matrix)"
    if max_relative_macs is not None:
        return f"max_relative_macs={max_relative_macs}"
    runtime = runtime or keras.backend.backend()
    return f"max_relative_cost={max_relative_cost} (runtime={runtime!r})"


def _cost_cap(target, method, max_relative_macs, max_relative_cost, runtime):
    """``(max_cost, cost)`` for `search.best_candidate`: no cap, the MAC cap, or the cap
    on the runtime cost model's price of a convolution's shapes (cached per shape and
    rank): the factored `KroneckerConv2D`'s, or for ``method="lowrank"`` the two plain
    convolutions `LowRankConv2D` runs."""
    if max_relative_macs is not None:
        if method == "lowrank" and target.kernel.ndim == 4:  # the MACs LowRankConv2D runs
            return max_relative_macs * target.macs_before, functools.lru_cache(maxsize=None)(
                lambda factors, rank: _lowrank_macs(target, rank))
        return max_relative_macs * target.macs_before, None
    if max_relative_cost is None:
        # KroneckerDense always runs factored: never dearer than the dense matrix
        return (target.macs_before, None) if target.kernel.ndim == 2 else (None, None)
    if target.kernel.ndim != 4:  # a Dense layer: its MACs
        return max_relative_cost * target.macs_before, None
    layer = target.layer
    hw, strides, padding = target.input_hw, tuple(layer.strides), layer.padding
    kh, kw, cin, cout = target.kernel.shape
    original = kz_ops.dense_conv_cost(hw, (kh, kw), cin, cout, strides, padding, runtime)

    @functools.lru_cache(maxsize=None)
    def cost(factors, rank):
        if method == "lowrank":  # (kh x 1, cin -> r) at (sh, 1), then (1 x kw, r -> cout)
            mid = (kz_ops.conv_output_length(hw[0], kh, strides[0], padding), hw[1])
            return (kz_ops.dense_conv_cost(hw, (kh, 1), cin, rank, (strides[0], 1), padding,
                                           runtime)
                    + kz_ops.dense_conv_cost(mid, (1, kw), rank, cout, (1, strides[1]),
                                             padding, runtime))
        return search.conv_cost(factors, rank, hw, strides, padding, runtime)

    return max_relative_cost * original, cost


def _override_choice(target, override, method):
    if not isinstance(override, dict) or "rank" not in override:
        raise ValueError(f"layer_overrides[{target.path!r}] must be a dict with 'rank' "
                         f"(and 'factors' for method='kronecker'). Received: {override!r}")
    kernel = target.kernel
    if method == "lowrank" and "factors" in override:
        raise ValueError(f"layer_overrides[{target.path!r}] gives 'factors', but "
                         "method='lowrank' fixes them: give only 'rank'")
    if method == "lowrank" or "factors" not in override:
        if method == "kronecker":
            raise ValueError(f"layer_overrides[{target.path!r}] needs 'factors' with "
                             "method='kronecker'")
        factors = _spectra(kernel, "lowrank")[0].factors
    else:
        factors = tuple(tuple(int(v) for v in s) for s in override["factors"])
    rank = override["rank"]
    if len(factors) == 2 and isinstance(rank, numbers.Integral):
        full = min(math.prod(f) for f in factors)
        if rank > full:
            raise ValueError(f"layer_overrides[{target.path!r}]: rank {rank} exceeds the full "
                             f"rank {full} of this split (rank {full} already reproduces the "
                             "kernel exactly; more terms only add parameters)")
    result = nearest_kronecker(kernel, factors, override["rank"])
    params = override["rank"] * sum(math.prod(s) for s in factors)
    layer = target.layer
    macs = search.conv_macs(factors, override["rank"], target.input_hw,
                            tuple(getattr(layer, "strides", (1, 1))),
                            getattr(layer, "padding", "same"))
    return search.Candidate(factors, int(override["rank"]), int(params),
                            result.relative_error, macs)


def _lowrank_macs(target, rank):
    layer = target.layer
    kh, kw, cin, cout = target.kernel.shape
    probe = LowRankConv2D(cout, (kh, kw), rank, strides=tuple(layer.strides),
                          padding=layer.padding)
    probe.build((None,) + target.input_hw + (cin,))
    return probe.macs(target.input_hw)


def _model_macs(model):
    """``(MACs, uncounted)``: the model's MACs per example as `kronecker_zoo.report`
    counts them (None where it cannot: an input size left open, several inputs) and the
    layers it leaves out of them (Conv1D, Conv3D, EinsumDense, ...)."""
    from kronecker_zoo import report

    if any(None in tuple(t.shape[1:]) for t in model.inputs):
        return None, ()
    try:
        counted = report.parameter_report(model)
    except ValueError:  # several inputs
        return None, ()
    return int(counted.macs), tuple(counted.uncounted)


def factorize(model, ratio=5.0, method="kronecker", exclude=(), layer_overrides=None,
              max_relative_macs=None, plan=None, max_relative_cost=None, runtime=None):
    """A new model with every layer of ``plan`` factorized and every other layer copied.

    ``plan`` defaults to ``plan_factorization(model, ratio, method, exclude,
    layer_overrides, max_relative_macs, max_relative_cost, runtime)`` (see there for
    the arguments). Each chosen
    layer becomes a `KroneckerConv2D` (``execution="auto"``), `LowRankConv2D` or
    `KroneckerDense` with the same name, filters/units, kernel size, strides, padding,
    bias, activation and kernel/bias regularizers and constraints (these act on each
    factor), its factors set to `nearest_kronecker` of the trained kernel and its bias
    copied. Every layer and nested model, and the model itself, keeps its ``trainable``
    flag (a teacher that `keras.distillation.Distiller` has frozen gives a frozen copy:
    factorize before distilling, or set ``student.trainable = True``). With every layer
    at full rank the new model computes what the original does.
    The original model is not modified. To see the choices first (or change them), call
    `plan_factorization` and pass its result as ``plan`` (refused if it does not fit
    ``model``: a layer it names is missing, has another kernel shape, or is one this
    model keeps, e.g. dilated).
    """
    if plan is None:
        plan = plan_factorization(model, ratio, method, exclude, layer_overrides,
                                  max_relative_macs, max_relative_cost, runtime)
    else:
        _check_model(model)
    paths = dict(_layers(model))
    missing = [c.name for c in plan.layers if c.name not in paths]
    if missing:
        raise ValueError(f"The plan names layers {missing} that model {model.name!r} lacks")
    for c in plan.layers:
        reason = _eligibility(paths[c.name])
        if reason is not None:
            raise ValueError(f"The plan does not fit model {model.name!r}: it factorizes layer "
                             f"{c.name!r}, which this model keeps ({reason}). Plan this model "
                             "with plan_factorization(model, ...)")
        shape = tuple(paths[c.name].kernel.shape)  # an eligible layer: Conv2D or Dense
        product = tuple(math.prod(f[a] for f in c.factors) for a in range(len(c.factors[0])))
        if shape != product:
            raise ValueError(f"The plan does not fit model {model.name!r}: its factors for "
                             f"layer {c.name!r} multiply to {product}, the layer's kernel is "
                             f"{shape}. Plan this model with plan_factorization(model, ...)")
    new_model = replace_layers(model, {c.name: {"layer": c.layer_type, "factors": c.factors,
                                                "rank": c.rank} for c in plan.layers})
    chosen = {id(paths[c.name]): c for c in plan.layers}  # a shared layer: any of its paths
    for path, layer in paths.items():
        if not layer.weights:
            continue
        target = _find(new_model, path)
        choice = chosen.get(id(layer))
        if choice is None:
            target.set_weights(layer.get_weights())
            if hasattr(target, "finalize_state"):  # an adapted layer: state derived from
                target.finalize_state()            # its weights (Normalization's mean)
            continue
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        factors = nearest_kronecker(kernel, choice.factors, choice.rank).factors
        if choice.layer_type == "LowRankConv2D":
            # (rank, kh, 1, in, 1), (rank, 1, kw, 1, out) -> (kh, 1, in, rank), (1, kw, rank, out)
            target.vertical.assign(np.moveaxis(factors[0][..., 0], 0, -1))
            target.horizontal.assign(np.moveaxis(factors[1][:, :, :, 0], 0, 2))
        else:
            for variable, value in zip(target.factor_weights, factors):
                variable.assign(value)
        if layer.use_bias:
            target.bias.assign(keras.ops.convert_to_numpy(layer.bias))
    return new_model


def _find(model, path):
    layer = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer
