"""Forcing the execution of layers that have a choice (factored / materialised).

`KroneckerConv2D` can run as a cascade of small convolutions ("factored") or as
one convolution with the full kernel formed from the factors ("materialized").
An exporter must pick the factored form on purpose: traced with the materialised
form, the converter constant-folds ``kron(F_0, F_1, ...)`` into a dense kernel and
the file is as large as the dense model's.

Layers are found by duck typing (any layer with a ``resolved_execution``
attribute, which `call` reads), through nested layers, tfmot wrappers (``.layer``)
and the tf_keras bridge's ``BridgedLayer`` (``.source``, the Keras 3 layer whose
``call`` it runs), so Keras 3 and tf_keras models are handled alike. Today that is
`KroneckerConv2D` only: `KroneckerDense` always runs factored, `ContextModule`,
`DilatedStack` and `LowRankConv2D` have no choice to make.
"""

import contextlib

from kronecker_zoo import graph

# "planned": each layer factored unless the runtime's cost model finds its full kernel
# cheaper, within the file-size budget (`planned_plan`).
FORCED_EXECUTIONS = ("factored", "materialized", "as_built", "planned")


# The values of a per-layer execution: ``{layer name: one of these}``.
PER_LAYER_EXECUTIONS = ("factored", "materialized")


def check_execution(execution):
    """Raise a ValueError naming the valid choices unless ``execution`` is one of
    `FORCED_EXECUTIONS` or a per-layer dict ``{layer name: "factored" |
    "materialized"}`` (layers it does not name run factored)."""
    if isinstance(execution, dict):
        bad = {name: value for name, value in execution.items()
               if not isinstance(name, str) or value not in PER_LAYER_EXECUTIONS}
        if bad:
            raise ValueError(
                "A per-layer `execution` maps layer names (str) to "
                f"{' or '.join(repr(e) for e in PER_LAYER_EXECUTIONS)}. Received: {bad!r}")
        return
    if execution not in FORCED_EXECUTIONS:
        raise ValueError(
            f"`execution` must be one of {', '.join(repr(e) for e in FORCED_EXECUTIONS)}, "
            f"or a dict {{layer name: 'factored' | 'materialized'}}. "
            f"Received: execution={execution!r}"
        )


def describe_execution(execution):
    """``execution`` in a few words: "factored", or "materialized: a, b; others
    factored" for a per-layer dict."""
    if not isinstance(execution, dict):
        return execution
    materialized = sorted(name for name, value in execution.items() if value == "materialized")
    if not materialized:
        return "factored"
    return f"materialized: {', '.join(materialized)}; others factored"


def per_layer_executions(layers, execution):
    """``[execution of each layer]``: ``execution`` itself, or a per-layer dict resolved
    (unnamed layers "factored"); a name no layer of ``layers`` has is a ValueError."""
    if not isinstance(execution, dict):
        return [execution] * len(layers)
    names = {layer.name for layer in layers}
    unknown = sorted(set(execution) - names)
    if unknown:
        raise ValueError(
            f"The per-layer `execution` names {unknown}, which are not layers of the model "
            f"that choose their execution. Those are: {sorted(names)}")
    return [execution.get(layer.name, "factored") for layer in layers]


def private_copy(model):
    """``model`` cloned with its weights (Keras 3), for an exporter to switch executions
    and rewrite layers on: the caller's model is never touched, even by an export that
    fails or by another thread using it meanwhile. A mixed-precision model's copy
    computes in float32, the dtype of its variables (`computes_below_float32`): LiteRT's
    builtin ops have no float16 compute (``quantization="float16"`` stores float16
    weights), and it is the precision a file is compared against.

    tf_keras models (e.g. tfmot twins from `kronecker_zoo.optimize`) are returned as they
    are: tfmot's wrappers do not clone with their state; their execution is switched and
    restored by `forced_execution`.
    """
    import keras

    if not isinstance(model, keras.Model):
        return model
    try:
        if computes_below_float32(model):
            copy = keras.models.clone_model(model, clone_function=_in_float32, recursive=True)
        else:
            copy = keras.models.clone_model(model)
    except Exception as error:  # noqa: BLE001 - say what to export instead
        raise ValueError(f"Export works on a copy of the model, and Keras cannot clone "
                         f"{model.name!r} ({type(error).__name__}: {error}). Export a "
                         "functional or Sequential model.") from error
    copy.set_weights(model.get_weights())
    return copy


def computes_below_float32(model):
    """Whether a layer of ``model`` (any depth) computes in another dtype than float32,
    e.g. under the ``mixed_float16`` policy."""
    return any(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
               != "float32" for layer in _inside(model))


def _in_float32(layer):
    """``layer`` rebuilt computing in float32 (its variables already are)."""
    config = layer.get_config()
    if "dtype" in config:  # a layer (an operation such as x / 255 has no dtype policy)
        config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def _children(obj):
    yield from graph.sublayers(obj)
    for attribute in ("source", "layer"):  # BridgedLayer, (tfmot) wrappers
        child = getattr(obj, attribute, None)
        if child is not None and hasattr(child, "name") and hasattr(child, "call"):
            yield child


def _inside(model):
    """``model`` and every layer inside it (any depth, through wrappers), once each."""
    seen, stack = set(), [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        stack.extend(_children(obj))


def execution_layers(model):
    """Every layer inside ``model`` (any depth) whose execution can be chosen."""
    return [obj for obj in _inside(model)
            if hasattr(obj, "resolved_execution") and hasattr(obj, "execution")]


def fake_quantized_layers(model):
    """The layers of `execution_layers` whose kernels run fake-quantized: the Keras 3
    layers inside the tf_keras bridge's ``BridgedLayer``s whose factors tfmot's QAT
    replaced (`kronecker_zoo.optimize.quantize_aware`)."""
    return [obj.source for obj in _inside(model)
            if getattr(obj, "weights_overridden", False)
            and hasattr(obj.source, "resolved_execution")]


# Bytes per stored weight in the files planned for a runtime's costs: an int8 file stores
# its weights (full kernels, "channels" lowering constants) as int8; every other runtime's,
# as float32.
WEIGHT_BYTES = {"litert_int8": 1}


def weight_bytes(runtime):
    """Bytes a weight takes in an export planned for ``runtime`` (`WEIGHT_BYTES`, else 4)."""
    return WEIGHT_BYTES.get(runtime, 4)


def extra_weights_budget(params, bytes_per_weight=4):
    """Weights that planned executions and lowerings may add to an export beyond the
    model's own: ``0.8 * params + 32,768`` bytes (a fifth of the float32 weights plus half
    the 64 KiB slack of `file_size_bound`, the other half left for the file's graph), so
    that a file stays within that bound; ``int(0.2 * params) + 8192`` float32 weights, four
    times as many int8 ones."""
    return (int(0.8 * params) + 32768) // bytes_per_weight


def _export_budget(model, runtime):
    """`extra_weights_budget` of ``model`` in a file planned for ``runtime``."""
    return extra_weights_budget(model.count_params(), weight_bytes(runtime))


def planned_lowerings(model, layers, runtime, budget=None):
    """``{layer: lowering}`` for the layers that plan their lowering (``lowering="auto"``):
    each layer's cheaper lowering on ``runtime`` (fake-quantized layers, which run
    "batch", left out), then, while the extra weights the
    "channels" lowerings store exceed ``budget`` (default `extra_weights_budget`), the
    layer saving least per extra weight goes back to "batch"."""
    fixed = fake_quantized_layers(model)  # "batch" whatever is planned (`forced_execution`)
    planning = [layer for layer in layers
                if hasattr(layer, "lowering_for") and getattr(layer, "lowering", None) == "auto"
                and not any(layer is f for f in fixed)]
    plan = {layer: layer.lowering_for(runtime) for layer in planning}
    extra = {layer: layer.lowering_constants("channels") - layer.lowering_constants("batch")
             for layer in planning if plan[layer] == "channels"}
    if budget is None:
        budget = _export_budget(model, runtime)
    saving = {layer: layer.lowering_saving(runtime) for layer in extra}
    kept = _within_budget(saving, extra, budget)
    for layer in extra:
        if layer not in kept:
            plan[layer] = "batch"
    return plan


def _within_budget(saving, extra, budget):
    """The layers of ``saving`` kept once, while their ``extra`` weights exceed ``budget``,
    the one saving least per extra weight has been dropped, then the next."""
    by_value = sorted(saving, key=lambda layer: saving[layer] / max(extra[layer], 1))
    while by_value and sum(extra[layer] for layer in by_value) > budget:
        by_value.pop(0)
    return by_value


def planned_executions(model, layers, runtime=None):
    """``({layer: "factored" | "materialized"}, extra weights)`` for ``execution="planned"``.

    A layer runs materialised where the cost model of ``runtime`` (`COST_WEIGHTS` of
    `kronecker_zoo.ops`; default: Keras' backend) finds one convolution with its full
    kernel cheaper than its factored execution (``layer.execution_costs``: tiny
    convolution groups cost their runtime far more than their MACs); then, while the
    extra weights those full kernels store exceed `extra_weights_budget`, the layer
    saving least per extra weight goes back to factored. Layers without a cost model
    run factored.
    """
    plan = {layer: "factored" for layer in layers}
    saving, extra = {}, {}
    for layer in layers:
        if not hasattr(layer, "execution_costs"):
            continue
        costs = layer.execution_costs(runtime)
        if costs["materialized"] < costs["factored"]:
            saving[layer] = costs["factored"] - costs["materialized"]
            extra[layer] = layer.materializing_extra_weights()
    kept = _within_budget(saving, extra, _export_budget(model, runtime))
    for layer in kept:
        plan[layer] = "materialized"
    return plan, sum(extra[layer] for layer in kept)


def modeled_cost(executions, lowerings, runtime):
    """The cost model's total for a plan: ``executions`` ``{layer: "factored" |
    "materialized"}``, ``lowerings`` ``{layer: lowering}`` (layers not in it: the lowering
    `lowering_for` picks); layers without a cost model count 0."""
    total = 0.0
    for layer, chosen in executions.items():
        if not hasattr(layer, "execution_costs"):
            continue
        costs = layer.execution_costs(runtime)
        total += costs[chosen]
        if (chosen == "factored" and layer in lowerings
                and lowerings[layer] != layer.lowering_for(runtime)):
            total += abs(layer.lowering_saving(runtime))  # held to the dearer lowering
    return total


def planned_plan(model, layers, runtime=None):
    """``(executions, lowerings)`` that ``execution="planned"`` runs on ``runtime``:
    `planned_executions`, then the "channels" lowerings within what their full kernels
    leave of the budget; unless the cost model finds every layer factored, the lowerings
    given the whole budget, cheaper (full kernels can crowd out lowerings that save more).
    Without a runtime: `planned_executions` and no lowering plan."""
    chosen, extra = planned_executions(model, layers, runtime)
    if not runtime:
        return chosen, {}
    budget = _export_budget(model, runtime)
    factored = [layer for layer in layers if chosen[layer] == "factored"]
    lowerings = planned_lowerings(model, factored, runtime, budget - extra)
    if "materialized" in chosen.values():
        all_factored = {layer: "factored" for layer in layers}
        alternative = planned_lowerings(model, layers, runtime, budget)
        if (modeled_cost(all_factored, alternative, runtime)
                < modeled_cost(chosen, lowerings, runtime)):
            return all_factored, alternative
    return chosen, lowerings


def resolve_execution(model, execution, runtime=None):
    """``execution`` as `forced_execution` runs it: "planned" becomes the per-layer dict
    ``{layer name: "materialized"}`` of the layers `planned_plan` materialises on
    ``runtime`` ("factored" when there are none); anything else is returned as it is."""
    check_execution(execution)
    if execution != "planned":
        return execution
    plan, _ = planned_plan(model, execution_layers(model), runtime)
    return {layer.name: chosen for layer, chosen in plan.items()
            if chosen == "materialized"} or "factored"


@contextlib.contextmanager
def forced_execution(model, execution="factored", runtime=None):
    """Within the block every choosing layer of ``model`` runs ``execution`` (or, for a
    per-layer dict ``{layer name: "factored" | "materialized"}``, what the dict says, the
    layers it does not name factored: see `check_execution`; for "planned", what
    `planned_plan` picks on ``runtime``, their full kernels counted in the lowerings'
    weight budget).

    Sets each layer's ``resolved_execution`` (what its ``call`` reads) and restores
    the previous values on exit, errors included. ``"as_built"`` changes nothing but the
    lowering of fake-quantized layers (below).
    With ``runtime`` ("litert", "tensorflow", "jax"), layers that plan their factored
    lowering (``lowering="auto"``) plan it for that runtime's measured costs, within
    `extra_weights_budget` (`planned_lowerings`). Fake-quantized layers (QAT,
    `fake_quantized_layers`) run the "batch" lowering whatever they were built with: its
    kernels are reshapes and transposes of the fake-quantized factors, which the TFLite
    converter quantizes as weights; it rejects the "channels" lowering's kernel, a
    concatenation of copies of a fake-quantized factor (or makes it an activation).
    Tracing (a `tf.function`, the TFLite converter, XLA) must happen inside the block.

    Yields:
        The list of layers that were switched.
    """
    check_execution(execution)
    layers = [] if execution == "as_built" else execution_layers(model)
    if execution == "planned":
        chosen, plan = planned_plan(model, layers, runtime)
        executions = [chosen[layer] for layer in layers]
    else:
        executions = per_layer_executions(layers, execution)
        plan = planned_lowerings(model, layers, runtime) if runtime else {}
    # (whatever the execution, "as_built" included: a QAT twin converts no other way)
    plan.update({layer: "batch" for layer in fake_quantized_layers(model)
                 if hasattr(layer, "resolved_lowering")})
    saved = [layer.resolved_execution for layer in layers]
    saved_lowering = [layer.resolved_lowering for layer in plan]
    try:
        for layer, chosen in zip(layers, executions):
            layer.resolved_execution = chosen
        for layer, lowering in plan.items():
            layer.resolved_lowering = lowering
        yield layers
    finally:
        for layer, value in zip(layers, saved):
            layer.resolved_execution = value
        for layer, value in zip(plan, saved_lowering):
            layer.resolved_lowering = value
