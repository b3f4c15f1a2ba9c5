"""Reusable checks for Keras layers of kronecker_zoo (import from any layer test).

    from tests.layer_checks import (
        check_config_round_trip, check_saving_round_trip, check_fit_step)

``input_shape`` always includes the batch size, e.g. ``(2, 9, 9, 4)``.
"""

import inspect
import json

import keras
import numpy as np


def init_arg_names(layer_cls):
    """Names of the explicit ``__init__`` arguments (no self, *args, **kwargs)."""
    params = inspect.signature(layer_cls.__init__).parameters
    return [
        name
        for name, p in params.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def random_input(input_shape, seed=0):
    return np.random.default_rng(seed).standard_normal(input_shape).astype("float32")


def randomize_weights(layer_or_model, seed=0, scale=0.3):
    """Give every weight random values (so biases etc. actually matter)."""
    g = np.random.default_rng(seed)
    layer_or_model.set_weights(
        [(scale * g.standard_normal(w.shape)).astype(w.dtype) for w in layer_or_model.get_weights()]
    )


def _to_numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def check_config_round_trip(layer_cls, kwargs, input_shape):
    """get_config covers every __init__ argument (before and after build), reflects
    every non-default argument, is JSON-serialisable, and from_config rebuilds a
    layer with the same config and (given the same weights) the same outputs."""
    names = init_arg_names(layer_cls)
    params = inspect.signature(layer_cls.__init__).parameters
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    missing = sorted(set(names) - set(config))
    assert not missing, f"get_config() misses __init__ arguments {missing}"
    json.dumps(config)  # must be JSON-serialisable

    # Every argument given a non-default value shows up as a different config entry.
    required = {n: kwargs[n] for n in names if params[n].default is inspect.Parameter.empty}
    default_config = layer_cls(**required).get_config()
    for name, value in kwargs.items():
        if name not in names or name in required:
            continue
        default = params[name].default
        if isinstance(value, type(default)) and value == default:
            continue
        assert config[name] != default_config[name], (
            f"get_config()[{name!r}] ignores the argument {name}={value!r}"
        )

    clone = layer_cls.from_config(config)
    assert clone.get_config() == config

    x = random_input(input_shape)
    layer(x)
    randomize_weights(layer, seed=1)
    built_config = layer.get_config()
    missing = sorted(set(names) - set(built_config))
    assert not missing, f"get_config() after build misses {missing}"
    assert built_config == config, "building the layer changed its config"

    restored = layer_cls.from_config(json.loads(json.dumps(built_config)))
    restored(x)
    restored.set_weights(layer.get_weights())
    np.testing.assert_array_equal(_to_numpy(restored(x)), _to_numpy(layer(x)))

    # keras' own (de)serialisation goes through the registered name
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is layer_cls
    assert revived.get_config() == config
    return layer


def _functional_model(layer_factory, input_shape):
    inputs = keras.Input(input_shape[1:])
    outputs = layer_factory()(inputs)
    return keras.Model(inputs, outputs)


def check_saving_round_trip(layer_factory, input_shape, tmp_path):
    """A model holding the layer survives ``.keras`` save/load bit for bit."""
    model = _functional_model(layer_factory, input_shape)
    randomize_weights(model, seed=2)
    x = random_input(input_shape, seed=3)
    before = _to_numpy(model(x))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    for w0, w1 in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(_to_numpy(loaded(x)), before)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    return loaded


def check_fit_step(layer_factory, input_shape, steps=5):
    """model.fit runs (graph mode) and lowers the loss of a tiny regression."""
    keras.utils.set_random_seed(0)
    model = _functional_model(layer_factory, input_shape)
    x = random_input(input_shape, seed=4)
    out_shape = (input_shape[0],) + tuple(model.output_shape[1:])
    y = np.random.default_rng(5).standard_normal(out_shape).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    weights0 = [_to_numpy(w).copy() for w in model.trainable_weights]
    loss0 = model.evaluate(x, y, verbose=0, batch_size=input_shape[0])
    history = model.fit(x, y, epochs=steps, batch_size=input_shape[0], shuffle=False, verbose=0)
    loss1 = model.evaluate(x, y, verbose=0, batch_size=input_shape[0])
    losses = history.history["loss"]
    assert len(losses) == steps and np.all(np.isfinite(losses))
    assert loss1 < loss0, f"loss did not decrease: {loss0} -> {loss1}"
    changed = [not np.array_equal(w0, _to_numpy(w1))
               for w0, w1 in zip(weights0, model.trainable_weights)]
    assert changed and all(changed), "some trainable weights were not updated by fit"
    return model
