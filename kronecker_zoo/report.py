"""Parameter reports: what a factorisation buys, layer by layer.

``parameter_report(model, input_shape)`` walks a functional (or Sequential) Keras
model call by call and gives, per layer and in total:

- ``params``: the layer's weights (trainable and not; the total equals
  ``model.count_params()``);
- ``dense_equivalent``: what a plain Conv2D / Dense with the same kernel extent and
  channels would need (equal to ``params`` for layers that are not factored);
- ``compression``: ``dense_equivalent / params``;
- ``macs``: multiply-accumulates per example at ``input_shape`` of the convolutions
  and matrix products the layer *executes* (a factored KroneckerConv2D counts its
  cascade of small convolutions, not the materialised kernel). BatchNorm,
  activations, pooling, resizing and additions are not counted;
- ``receptive_field``: ``(h, w)`` extent in input pixels of the layer's output
  (``"global"`` after global pooling), and ``stride``, the input pixels between
  neighbouring outputs: ``rf_out = rf_in + (k_eff - 1) * stride_in``. After an
  upsampling that recurrence gives the average over output positions, so models
  with upsampling get the largest field instead, from exact 1-D support intervals.

Renders as text, Markdown or JSON; `compare` puts several models side by side.
"""

import dataclasses
import json
import math

import keras
import numpy as np

from kronecker_zoo import graph
from kronecker_zoo.layers import (
    ContextModule,
    CropToMatch,
    DilatedStack,
    KroneckerConv2D,
    KroneckerDense,
    LowRankConv2D,
)
from kronecker_zoo.tables import markdown_table
from kronecker_zoo.validation import int_sequence

GLOBAL = "global"


@dataclasses.dataclass
class LayerRow:
    """One layer call of the report (``params`` is 0 on a shared layer's later calls)."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    dense_equivalent: int
    macs: int
    receptive_field: object  # (h, w) or "global"
    stride: tuple

    @property
    def compression(self):
        return self.dense_equivalent / self.params if self.params else 1.0


@dataclasses.dataclass
class ParameterReport:
    """Rows per layer call plus totals; render with `to_text`, `to_markdown`, `to_json`."""

    model_name: str
    input_shape: tuple
    rows: list
    uncounted: list  # layers with weights whose MACs the report does not know

    @property
    def params(self):
        return sum(r.params for r in self.rows)

    @property
    def dense_equivalent(self):
        return sum(r.dense_equivalent for r in self.rows)

    @property
    def compression(self):
        return self.dense_equivalent / self.params if self.params else 1.0

    @property
    def macs(self):
        return sum(r.macs for r in self.rows)

    @property
    def receptive_field(self):
        """Largest finite receptive field of any feature map, ``(h, w)``."""
        finite = [r.receptive_field for r in self.rows if r.receptive_field != GLOBAL]
        return tuple(max(rf[a] for rf in finite) for a in (0, 1)) if finite else (1, 1)

    def totals(self):
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "params": self.params,
            "dense_equivalent": self.dense_equivalent,
            "compression": round(self.compression, 3),
            "macs": self.macs,
            "receptive_field": list(self.receptive_field),
        }

    def to_dict(self):
        layers = []
        for r in self.rows:
            row = dataclasses.asdict(r)
            row["output_shape"] = list(r.output_shape)
            row["stride"] = list(r.stride)
            row["receptive_field"] = (r.receptive_field if r.receptive_field == GLOBAL
                                      else list(r.receptive_field))
            row["compression"] = round(r.compression, 3)
            layers.append(row)
        return {"totals": self.totals(), "layers": layers, "uncounted": list(self.uncounted)}

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def _table(self, all_layers):
        header = ["layer", "type", "output", "params", "dense-equiv", "compression", "MACs",
                  "RF"]
        body = []
        for r in self.rows:
            if not all_layers and not (r.params or r.macs):
                continue
            body.append([r.name, r.kind, _shape(r.output_shape), f"{r.params:,}",
                         f"{r.dense_equivalent:,}", f"{r.compression:.1f}x", _count(r.macs),
                         _rf(r.receptive_field)])
        body.append(["total", "", "", f"{self.params:,}", f"{self.dense_equivalent:,}",
                     f"{self.compression:.1f}x", _count(self.macs), _rf(self.receptive_field)])
        return header, body

    def to_text(self, all_layers=False):
        """Fixed-width table; layers without weights or MACs are hidden unless asked."""
        header, body = self._table(all_layers)
        title = f"{self.model_name}  (input {_shape(self.input_shape)})"
        lines = [title] + _fixed_width(header, body)
        if self.uncounted:
            lines.append(f"MACs not counted for: {', '.join(self.uncounted)}")
        return "\n".join(lines)

    def to_markdown(self, all_layers=False):
        header, body = self._table(all_layers)
        lines = [f"**{self.model_name}** (input {_shape(self.input_shape)})", "",
                 markdown_table(header, body, left=3)]
        if self.uncounted:
            lines += ["", f"MACs not counted for: {', '.join(self.uncounted)}"]
        return "\n".join(lines)

    def __str__(self):
        return self.to_text()


def _shape(shape):
    return "x".join("?" if d is None else str(d) for d in shape)


def _count(n):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _rf(rf):
    if rf == GLOBAL:
        return GLOBAL
    return str(rf[0]) if rf[0] == rf[1] else f"{rf[0]}x{rf[1]}"


def _fixed_width(header, body, left=3):
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def fmt(row):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    return [fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in body]


# -- per-layer costs -------------------------------------------------------------------

def _as_pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _conv_macs(out_shape, kernel_hw, cin_per_group, cout):
    return out_shape[1] * out_shape[2] * kernel_hw[0] * kernel_hw[1] * cin_per_group * cout


def _extent(kernel_size, dilation):
    return tuple((k - 1) * d + 1 for k, d in zip(_as_pair(kernel_size), _as_pair(dilation)))


def _bias(layer, n):
    return n if getattr(layer, "use_bias", False) else 0


def layer_costs(layer, in_shape, out_shape):
    """``(macs, dense_equivalent, extent, strides, known)`` of one call of ``layer``.

    ``extent``: the kernel's ``(h, w)`` extent in the layer's input pixels (1 when
    it has none); ``strides``: the layer's downsampling, negative for upsampling.
    """
    params = layer.count_params()
    cin = in_shape[-1] if in_shape is not None else None
    if isinstance(layer, (KroneckerConv2D, LowRankConv2D)):
        return (layer.macs(in_shape[1:3]), layer.dense_equivalent_params(),
                layer.kernel_size, layer.strides, True)
    if isinstance(layer, KroneckerDense):
        positions = math.prod(in_shape[1:-1])
        return layer.macs() * positions, layer.dense_equivalent_params(), (1, 1), (1, 1), True
    if isinstance(layer, (DilatedStack, ContextModule)):
        macs, shape = 0, tuple(in_shape)
        rf = _as_pair(layer.receptive_field)
        if getattr(layer, "pad_once", False) and layer.padding == "same":
            shape = (shape[0], shape[1] + rf[0] - 1, shape[2] + rf[1] - 1, shape[3])
        for conv in layer.convs:
            kh, kw, ci, co = conv.kernel.shape
            shape = tuple(conv.compute_output_shape(shape))
            macs += _conv_macs(shape, (kh, kw), ci, co)
        return macs, params, rf, (1, 1), True
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        mid = cin * layer.depth_multiplier
        macs = _conv_macs(out_shape, (kh, kw), 1, mid) + _conv_macs(out_shape, (1, 1), mid,
                                                                      layer.filters)
        dense = kh * kw * cin * layer.filters + _bias(layer, layer.filters)
        return macs, dense, _extent(layer.kernel_size, layer.dilation_rate), layer.strides, True
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        cout = cin * layer.depth_multiplier
        dense = kh * kw * cin * cout + _bias(layer, cout)
        return (_conv_macs(out_shape, (kh, kw), 1, cout), dense,
                _extent(layer.kernel_size, layer.dilation_rate), layer.strides, True)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        macs = in_shape[1] * in_shape[2] * kh * kw * cin * layer.filters
        # An output depends on ceil(k / s) inputs per axis (in input units).
        extent = tuple(-(-k // st) for k, st in zip((kh, kw), layer.strides))
        return macs, params, extent, tuple(-st for st in layer.strides), True
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        groups = getattr(layer, "groups", 1)
        dense = kh * kw * cin * layer.filters + _bias(layer, layer.filters)
        return (_conv_macs(out_shape, (kh, kw), cin // groups, layer.filters), dense,
                _extent(layer.kernel_size, layer.dilation_rate), layer.strides, True)
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(in_shape[1:-1])
        return positions * cin * layer.units, params, (1, 1), (1, 1), True
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        return 0, params, _as_pair(layer.pool_size), _as_pair(layer.strides), True
    if isinstance(layer, keras.layers.UpSampling2D):
        # Bilinear outputs mix 2 neighbouring inputs per axis, nearest ones 1.
        extent = (2, 2) if layer.interpolation == "bilinear" else (1, 1)
        return 0, params, extent, tuple(-s for s in _as_pair(layer.size)), True
    if hasattr(layer, "macs") and in_shape is not None and len(in_shape) == 4:
        return layer.macs(in_shape[1:3]), params, (1, 1), (1, 1), True
    return 0, params, (1, 1), (1, 1), params == 0 or isinstance(layer, _NO_MAC_LAYERS)


# Layers whose weights do no multiply-accumulates worth counting (affine per channel).
_NO_MAC_LAYERS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                  keras.layers.GroupNormalization, keras.layers.Normalization,
                  keras.layers.Embedding)
_GLOBAL_LAYERS = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
                  keras.layers.Flatten)


def _at_input_shape(model, input_shape):
    """``model`` itself when it already has that input shape, else a clone built at it."""
    own = tuple(model.inputs[0].shape[1:])
    if input_shape is None:
        if any(d is None for d in own):
            raise ValueError(
                f"{model.name} accepts any input size {own}; pass input_shape=(height, "
                "width, channels) to count MACs and receptive fields at a size."
            )
        return model, own
    try:
        input_shape = int_sequence(input_shape, "input_shape")
    except ValueError:
        raise ValueError(f"input_shape must be a full size (height, width, channels) of "
                         f"positive ints to count MACs at. Received: input_shape="
                         f"{input_shape!r}") from None
    if len(input_shape) != len(own) or any(
            o is not None and o != d for o, d in zip(own, input_shape)):
        raise ValueError(f"input_shape={input_shape} does not fit {model.name}, which takes "
                         f"inputs of shape {own}")
    if own == input_shape:
        return model, own
    clone = keras.models.clone_model(model, input_tensors=keras.Input(shape=input_shape))
    return clone, input_shape


def parameter_report(model, input_shape=None):
    """Parameter/MAC/receptive-field report of a built functional or Sequential model.

    Args:
        model: `keras.Model` (functional or Sequential, built).
        input_shape: `(height, width, channels)` at which to count MACs and
            receptive fields; required when the model accepts any size.

    Returns:
        `ParameterReport`. Every weight counts once, on the first call of the first
        layer that holds it (a layer shared across nested models included).
    """
    return _report(model, input_shape, set())


def _report(model, input_shape, counted):
    """`parameter_report`, skipping the variables whose ``id`` is in ``counted`` (the
    weights of the enclosing model already counted) and adding those it counts."""
    if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
        raise TypeError("parameter_report needs a built functional or Sequential keras.Model. "
                        f"Received: {type(model).__name__}")
    if len(model.inputs) != 1:
        raise ValueError(f"parameter_report supports single-input models; {model.name} has "
                         f"{len(model.inputs)} inputs")
    first = next((layer.name for layer in graph.all_sublayers(model)
                  if getattr(layer, "data_format", "channels_last") == "channels_first"), None)
    if first is not None:
        raise ValueError(f"parameter_report counts channels_last models (the Keras default); "
                         f"layer {first!r} of {model.name} is channels_first")
    shaped, input_shape = _at_input_shape(model, input_shape)
    originals = {layer.name: layer for layer in model.layers}
    # Per tensor: (rf_h, rf_w) or GLOBAL, and (stride_h, stride_w) in input pixels.
    fields = {id(shaped.inputs[0]): ((1, 1), (1.0, 1.0))}
    rows, uncounted, steps = [], [], []
    for layer, inputs, outputs, _, _ in graph.layer_calls(shaped):
        original = originals.get(layer.name, layer)
        in_fields = [fields[id(t)] for t in inputs]
        in_shape = tuple(inputs[0].shape)
        out_shape = tuple(outputs[0].shape)
        inner = _nested_report(original, inputs, counted)
        if inner is not None:  # a nested model: its own report, composed
            macs, dense, extent, strides = _nested_costs(inner)
            params = inner.params
            uncounted.extend(f"{layer.name}/{name}" for name in inner.uncounted)
        elif not isinstance(original, keras.layers.Layer):
            # an operation on tensors (x * 0.5, keras.ops.add): no weights, no MACs
            # counted; its extent is known only where it keeps the spatial size
            macs, dense, extent, strides, params = 0, 0, (1, 1), (1, 1), 0
            if len(in_shape) == 4 and in_shape[1:3] != out_shape[1:3]:
                uncounted.append(layer.name)
        else:
            macs, dense, extent, strides, known = layer_costs(original, in_shape, out_shape)
            if not known:
                uncounted.append(layer.name)
            weights = _new_weights(original, counted)
            if original.weights and not weights:  # all counted before: a shared layer
                dense = 0
            params = sum(math.prod(w.shape) for w in weights)
            counted.update(id(w) for w in weights)
        if isinstance(layer, CropToMatch):
            in_fields = in_fields[:1]
        if (any(rf == GLOBAL for rf, _ in in_fields) or isinstance(layer, _GLOBAL_LAYERS)
                or extent == GLOBAL):
            field = (GLOBAL, (math.inf, math.inf))
        else:
            rf_in = tuple(max(f[0][a] for f in in_fields) for a in (0, 1))
            jump_in = tuple(max(f[1][a] for f in in_fields) for a in (0, 1))
            rf = tuple(int(round(rf_in[a] + (extent[a] - 1) * jump_in[a])) for a in (0, 1))
            jump = tuple(jump_in[a] * strides[a] if strides[a] > 0 else jump_in[a] / -strides[a]
                         for a in (0, 1))
            field = (rf, jump)
        for t in outputs:
            fields[id(t)] = field
        stride = tuple(round(j, 3) if math.isfinite(j) else 0 for j in field[1])
        rows.append(LayerRow(layer.name, type(layer).__name__, out_shape[1:], params,
                             dense, int(macs), field[0], stride))
        steps.append((layer, original, inputs, outputs, extent, strides))
    if any(s < 0 for *_unused, strides in steps for s in strides):
        # After an upsampling the recurrence gives the average field over output
        # positions (their alignment to the coarse grid differs); the largest one
        # comes from propagating exact support intervals.
        largest = max(max(r.receptive_field) for r in rows if r.receptive_field != GLOBAL)
        exact = _exact_fields(shaped, steps, 4 * largest + 64)
        for row, (layer, *_rest) in zip(rows, steps):
            if row.receptive_field != GLOBAL and exact.get(layer.name):
                row.receptive_field = exact[layer.name]
    return ParameterReport(model.name, input_shape, rows, uncounted)


def _window_support(lo, hi, extent, stride, padding):
    """Support intervals after a window op (conv/pool) of ``extent`` along one axis."""
    n = len(lo)
    if padding == "valid":
        out, before = (n - extent) // stride + 1, 0
    else:
        out = -(-n // stride)
        before = max((out - 1) * stride + extent - n, 0) // 2
    first = np.arange(out) * stride - before
    last = np.minimum(first + extent - 1, n - 1)
    first = np.maximum(first, 0)
    return lo[first], hi[last]


def _upsample_support(lo, hi, size, bilinear):
    n = len(lo)
    q = np.arange(n * size)
    if not bilinear:
        return lo[q // size], hi[q // size]
    src = (q + 0.5) / size - 0.5  # half-pixel centres, as tf.image.resize / jax
    i0 = np.clip(np.floor(src).astype(int), 0, n - 1)
    i1 = np.clip(np.floor(src).astype(int) + 1, 0, n - 1)
    return lo[np.minimum(i0, i1)], hi[np.maximum(i0, i1)]


def _transpose_support(lo, hi, kernel, stride, padding):
    n = len(lo)
    before = max(kernel - stride, 0) // 2 if padding == "same" else 0
    out = n * stride if padding == "same" else (n - 1) * stride + kernel
    q = np.arange(out)[:, None] + before - np.arange(kernel)[None, :]  # q = i * s + j - before
    valid = (q % stride == 0) & (q // stride >= 0) & (q // stride < n)
    i = np.where(valid, q // stride, 0)
    new_lo = np.where(valid, lo[i], np.iinfo(np.int64).max).min(axis=1)
    new_hi = np.where(valid, hi[i], -1).max(axis=1)
    return new_lo, new_hi


def _exact_fields(model, steps, minimum_size):
    """``{layer name: (rf_h, rf_w)}``: the largest support of any output position far
    from the borders, propagating exact 1-D support intervals on a virtual input of
    at least ``minimum_size`` pixels per axis (a multiple of every downsampling)."""
    period = 1
    for *_unused, strides in steps:
        for s in strides:
            if s > 0:
                period *= s
    size = -(-minimum_size // period) * period
    start = np.arange(size)
    supports = {id(model.inputs[0]): [(start, start), (start, start)]}
    result = {}
    for layer, original, inputs, outputs, extent, strides in steps:
        ins = [supports.get(id(t)) for t in inputs]
        if any(s is None for s in ins) or isinstance(layer, _GLOBAL_LAYERS) or extent == GLOBAL:
            for t in outputs:
                supports[id(t)] = None
            continue
        axes = []
        for a in (0, 1):
            lo, hi = ins[0][a]
            if isinstance(layer, CropToMatch):
                n = len(ins[1][a][0])
                lo, hi = lo[:n], hi[:n]
            elif len(ins) > 1:
                n = min(len(s[a][0]) for s in ins)
                lo = np.min([s[a][0][:n] for s in ins], axis=0)
                hi = np.max([s[a][1][:n] for s in ins], axis=0)
            elif isinstance(layer, keras.layers.UpSampling2D):
                lo, hi = _upsample_support(lo, hi, -strides[a],
                                           layer.interpolation == "bilinear")
            elif isinstance(layer, keras.layers.Conv2DTranspose):
                lo, hi = _transpose_support(lo, hi, layer.kernel_size[a], -strides[a],
                                            layer.padding)
            elif extent[a] > 1 or strides[a] > 1:
                lo, hi = _window_support(lo, hi, extent[a], strides[a],
                                         getattr(original, "padding", "valid"))
            axes.append((lo, hi))
        for t in outputs:
            supports[id(t)] = axes
        spans = []
        for lo, hi in axes:
            inside = (lo > 0) & (hi < size - 1)
            spans.append(int((hi - lo)[inside].max()) + 1 if inside.any() else None)
        result[layer.name] = tuple(spans) if None not in spans else None
    return result


def _new_weights(layer, counted):
    """``layer``'s variables whose ``id`` is not in ``counted``, each once."""
    return list({id(w): w for w in layer.weights if id(w) not in counted}.values())


def _nested_report(layer, inputs, counted):
    """The report of a nested functional / Sequential model called on one input, at that
    input's shape, counting only weights not in ``counted`` (which then holds them too);
    None for anything else."""
    if not isinstance(layer, keras.Model) or len(inputs) != 1:
        return None
    inner_counted = set(counted)
    try:
        report = _report(layer, tuple(inputs[0].shape[1:]), inner_counted)
    except (TypeError, ValueError):  # a subclassed or multi-input model
        return None
    counted.update(inner_counted)
    return report


def _nested_costs(report):
    """``(macs, dense_equivalent, extent, strides)`` of a nested model from its report:
    its output's receptive field and stride are the extent and downsampling it applies
    (``GLOBAL`` after global pooling); a stride below 1 (upsampling) is negative."""
    last = report.rows[-1] if report.rows else None
    if last is None:
        return 0, 0, (1, 1), (1, 1)
    if last.receptive_field == GLOBAL:
        return report.macs, report.dense_equivalent, GLOBAL, (1, 1)
    strides = tuple(j if j >= 1 else -round(1 / j) for j in last.stride)
    return report.macs, report.dense_equivalent, tuple(last.receptive_field), strides


def compare(items, input_shape=None, format="text"):
    """Side-by-side totals of several models (or reports).

    Args:
        items: iterable of `keras.Model` or `ParameterReport`.
        input_shape: passed to `parameter_report` for models.
        format: `"text"`, `"markdown"` or `"json"`.
    """
    if format not in ("text", "markdown", "json"):
        raise ValueError(f"`format` must be 'text', 'markdown' or 'json'. Received: {format!r}")
    reports = [item if isinstance(item, ParameterReport) else
               parameter_report(item, input_shape) for item in items]
    if format == "json":
        return json.dumps([r.totals() for r in reports], indent=2)
    header = ["model", "input", "params", "dense-equiv", "compression", "MACs", "RF"]
    body = [[r.model_name, _shape(r.input_shape), f"{r.params:,}", f"{r.dense_equivalent:,}",
             f"{r.compression:.1f}x", _count(r.macs), _rf(r.receptive_field)] for r in reports]
    notes = [f"MACs not counted for: {r.model_name}: {', '.join(r.uncounted)}"
             for r in reports if r.uncounted]
    if format == "text":
        return "\n".join(_fixed_width(header, body, left=2) + notes)
    return "\n".join([markdown_table(header, body, left=2)] + ([""] + notes if notes else []))
