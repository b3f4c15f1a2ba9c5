"""kronecker_zoo.graph: the one reader of Keras' layer graph, checked on small hand-built
models whose structure is known by construction (Keras 3 and tf_keras)."""

import keras
import pytest
import tf_keras

from kronecker_zoo import graph


def _branchy_model():
    """x -> a -> (b, c) -> add -> shared -> shared -> out; `shared` called twice."""
    x = keras.Input((6,), name="x")
    a = keras.layers.Dense(4, name="a")(x)
    b = keras.layers.Dense(4, name="b")(a)
    c = keras.layers.Dense(4, name="c")(a)
    added = keras.layers.Add(name="add")([b, c])
    shared = keras.layers.Dense(4, name="shared")
    h = shared(shared(added))
    return keras.Model(x, keras.layers.Dense(2, name="out")(h))


def test_layer_calls_are_topological_with_one_entry_per_call():
    model = _branchy_model()
    calls = graph.layer_calls(model)
    names = [call.layer.name for call in calls]
    assert sorted(names) == sorted(["a", "b", "c", "add", "shared", "shared", "out"])
    position = {}
    for i, call in enumerate(calls):
        for tensor in call.inputs:
            made_by = graph.producer(tensor)
            if not isinstance(made_by, keras.layers.InputLayer):
                # the producing call comes earlier and output this very tensor
                earlier = [j for j, c in enumerate(calls[:i])
                           if any(t is tensor for t in c.outputs)]
                assert earlier and calls[earlier[0]].layer is made_by
        position.setdefault(call.layer.name, i)
    add = next(c for c in calls if c.layer.name == "add")
    assert [graph.producer(t).name for t in add.inputs] == ["b", "c"]
    assert isinstance(add.args[0], list) and len(add.args[0]) == 2  # the call's own arguments
    assert calls[-1].layer.name == "out" and calls[-1].outputs[0] is model.outputs[0]
    assert graph.producer(model.inputs[0]).name == "x"


def test_sequential_is_read_like_a_functional_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d1"),
                              keras.layers.Dense(1, name="d2")])
    inputs, outputs = graph.graph_io(model)
    assert len(inputs) == 1 and len(outputs) == 1
    assert [c.layer.name for c in graph.layer_calls(model)] == ["d1", "d2"]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("model, message", [
    (_Subclassed(), "subclassed models have no graph"),
    (keras.Sequential([keras.layers.Dense(2)]), "is not built"),
])
def test_a_model_without_a_graph_is_refused_by_name(model, message):
    with pytest.raises(ValueError, match=message):
        graph.graph_io(model, "Testing")
    with pytest.raises(ValueError, match=message):
        graph.layer_calls(model)


def test_inbound_layers_and_consumers_keras3():
    model = _branchy_model()
    layer = {lyr.name: lyr for lyr in model.layers}
    assert [[i.name for i in call] for call in graph.inbound_layers(layer["add"])] == [["b", "c"]]
    assert [[i.name for i in call] for call in graph.inbound_layers(layer["shared"])] == [
        ["add"], ["shared"]]
    consumers = graph.consumers(model)
    assert sorted(c.name for c in consumers["a"]) == ["b", "c"]
    assert [c.name for c in consumers["shared"]] == ["shared", "out"]
    assert [c.name for c in consumers["add"]] == ["shared"]
    assert consumers["out"] == [graph.MODEL_OUTPUT]


def test_sole_inbound_layer_only_for_one_call_on_one_input():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")
    b = keras.layers.Dense(4, name="b")
    x, y = a(inputs), b(inputs)
    shared = keras.layers.Dense(4, name="shared")
    outputs = keras.layers.Add(name="add")([shared(x), shared(y)])
    single = keras.layers.Dense(2, name="single")(outputs)
    model = keras.Model(inputs, single)
    assert graph.sole_inbound_layer(model.get_layer("single")).name == "add"
    assert graph.sole_inbound_layer(model.get_layer("add")) is None  # two inputs
    assert graph.sole_inbound_layer(model.get_layer("shared")) is None  # two calls


def test_consumers_see_model_outputs_and_operations_that_are_not_layers():
    """A rewrite that changes a layer's output for its one reader must know of the
    others: a returned output, ``x * 0.5`` (a Keras operation, not in ``model.layers``)."""
    x = keras.Input((6,), name="x")
    a = keras.layers.Dense(4, name="a")(x)
    b = keras.layers.Dense(4, name="b")(a)
    c = keras.layers.Dense(4, name="c")(x)
    d = keras.layers.Dense(4, name="d")(c * 0.5)
    model = keras.Model(x, [a, b, d])
    consumers = graph.consumers(model)
    assert [c.name for c in consumers["a"]] == ["b", graph.MODEL_OUTPUT.name]
    assert consumers["b"] == [graph.MODEL_OUTPUT] and consumers["d"] == [graph.MODEL_OUTPUT]
    (scaling,) = consumers["c"]
    assert not isinstance(scaling, keras.layers.Layer)
    assert [r.name for r in consumers[scaling.name]] == ["d"]
    assert sorted(r.name for r in consumers["x"]) == ["a", "c"]


def test_inbound_layers_and_consumers_tf_keras():
    x = tf_keras.Input((5,), name="x")
    a = tf_keras.layers.Dense(3, name="a")(x)
    b = tf_keras.layers.Dense(3, name="b")(a)
    model = tf_keras.Model(x, tf_keras.layers.Add(name="add")([a, b]))
    layer = {lyr.name: lyr for lyr in model.layers}
    assert [[i.name for i in call] for call in graph.inbound_layers(layer["add"])] == [["a", "b"]]
    consumers = graph.consumers(model)
    assert sorted(c.name for c in consumers["a"]) == ["add", "b"]
    assert [c.name for c in consumers["x"]] == ["a"]
    assert consumers["add"] == [graph.MODEL_OUTPUT]


class _Composite(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(3, name="first")
        self.second = keras.layers.Dense(3, name="second")

    def call(self, x):
        return self.second(self.first(x))


def test_sublayers_of_a_nested_model_and_a_composite_layer():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")],
                             name="inner")
    x = keras.Input((4,))
    composite = _Composite(name="composite")
    outer = keras.Model(x, composite(inner(x)))
    assert [lyr.name for lyr in graph.sublayers(composite)] == ["first", "second"]
    assert [lyr.name for lyr in graph.sublayers(inner)
            if not isinstance(lyr, keras.layers.InputLayer)] == ["inner_dense"]
    assert {lyr.name for lyr in graph.sublayers(outer)} >= {"inner", "composite"}
    assert graph.sublayers(keras.layers.Dense(2)) == []
