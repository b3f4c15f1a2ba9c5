"""Does equalising post-ReLU activation ranges help post-training int8? (Measured: no.)

An int8 activation tensor is quantized per tensor, so a channel whose range is a tenth
of the tensor's keeps about a tenth of the 256 levels. Cross-layer equalisation
(Nagel et al. 2019) rescales such channels, exactly in float, for every chain
``BatchNormalization -> ReLU -> Conv2D`` whose BatchNormalization and ReLU feed only the
next layer:

    gamma_c, beta_c  /= s_c        (so the ReLU's output channel c is divided by s_c)
    kernel[:, :, c, :] *= s_c      (so the next convolution's output is unchanged)

with ``s_c`` from the per-channel maximum ``r1_c`` of the ReLU's output on the
calibration images and the range ``r2_c`` of the next kernel's input channel ``c``:

* ``act``: ``s_c = r1_c / max(r1)``: every channel spans the tensor's full range;
* ``cle``: ``s_c = sqrt(r1_c / r2_c)`` (normalised to max 1): activation and weight
  ranges balanced, Nagel's rule.

Each variant is exported with the library's int8 path (`to_tflite`, the same
calibration images) and verified against the *original* Keras model: top-1 / per-pixel
agreement and SQNR. The published model is never modified (a clone is rescaled).

    PYTHONPATH=. python experiments/int8_activation_equalization.py context_net_frontend \
        --examples 2000
    PYTHONPATH=. python experiments/int8_activation_equalization.py resnet_8 --examples 10000
"""

import argparse
import os
import tempfile

import keras
import numpy as np

from kronecker_zoo import graph
from kronecker_zoo.export import to_tflite, verify_tflite
from kronecker_zoo.export.int8_rewrites import channels_last_batchnorm
from tflite import zoo  # the tools' loader, test set and calibration set

MODES = ("none", "act", "cle")


def _plain_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and not layer.negative_slope and not layer.threshold
    return (isinstance(layer, keras.layers.Activation)
            and layer.get_config()["activation"] == "relu")


def equalizable_chains(model):
    """``[(bn, relu, conv)]``: BatchNormalization (channels last, with ``gamma`` and
    ``beta``) -> ReLU -> Conv2D (ungrouped, called once), each read only by the next."""
    consumers = graph.consumers(model)
    chains = []
    for relu in model.layers:
        if not _plain_relu(relu):
            continue
        bn = graph.sole_inbound_layer(relu)
        after = consumers[relu.name]
        if (isinstance(bn, keras.layers.BatchNormalization) and channels_last_batchnorm(bn)
                and bn.scale and bn.center and consumers[bn.name] == [relu]
                and len(after) == 1 and type(after[0]) is keras.layers.Conv2D
                and after[0].groups == 1 and len(graph.inbound_layers(after[0])) == 1):
            chains.append((bn, relu, after[0]))
    return chains


def channel_scales(activation_max, kernel, mode):
    """``s_c`` (float64, max 1) for the ReLU output's channels (see the module docstring);
    channels that never fire on the calibration images keep ``s_c = 1``."""
    if mode not in ("act", "cle"):
        raise ValueError(f"Unknown mode {mode!r}. Valid: 'act', 'cle'")
    r1 = np.asarray(activation_max, np.float64)
    live = r1 > 0
    s = np.ones_like(r1)
    if not live.any():
        return s
    if mode == "act":
        s[live] = r1[live]
    else:
        r2 = np.maximum(np.abs(np.asarray(kernel, np.float64)).max(axis=(0, 1, 3)), 1e-12)
        s[live] = np.sqrt(r1[live] / r2[live])
    s[live] /= s[live].max()
    return s


def equalized_copy(model, calibration, mode):
    """A clone of ``model`` with every equalizable chain rescaled; the model is untouched."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    chains = equalizable_chains(copy)
    if mode == "none" or not chains:
        return copy, []
    probe = keras.Model(copy.inputs, [relu.output for _, relu, _ in chains])
    outputs = probe.predict(np.asarray(calibration, np.float32), verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    spreads = []
    for (bn, _, conv), out in zip(chains, outputs):
        s = channel_scales(out.reshape(-1, out.shape[-1]).max(axis=0), conv.kernel, mode)
        bn.gamma.assign((np.asarray(bn.gamma, np.float64) / s).astype("float32"))
        bn.beta.assign((np.asarray(bn.beta, np.float64) / s).astype("float32"))
        kernel = np.asarray(conv.kernel, np.float64) * s[None, None, :, None]
        conv.kernel.assign(kernel.astype("float32"))
        spreads.append((conv.name, float(s.min())))
    return copy, spreads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a registry model with published weights")
    parser.add_argument("--examples", type=int, default=None, help="first N test images")
    parser.add_argument("--calibration", type=int, default=64, help="calibration images")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)

    model = zoo.load_model(args.name)
    images, labels = zoo.test_set(args.name, args.examples)
    calibration = zoo.calibration_set(args.name, zoo.default_weights(args.name),
                                      count=args.calibration)
    print(f"{args.name}: {len(images)} test images, {args.calibration} calibration images, "
          f"{len(equalizable_chains(model))} equalizable chains")
    print("| mode | smallest s_c per chain | float max abs diff | int8 agreement | SQNR dB |")
    print("|---|---|---:|---:|---:|")
    for mode in args.modes:
        copy, spreads = equalized_copy(model, calibration, mode)
        sample = np.asarray(images[:64], np.float32)
        diff = float(np.abs(copy.predict(sample, verbose=0)
                            - model.predict(sample, verbose=0)).max())
        with tempfile.TemporaryDirectory() as directory:
            info = to_tflite(copy, os.path.join(directory, "int8.tflite"), quantization="int8",
                             representative_data=calibration)
            report = verify_tflite(model, info, images, labels)
        smallest = ", ".join(f"{s:.2f}" for _, s in spreads) or "-"
        print(f"| {mode} | {smallest} | {diff:.1e} | {report.agreement:.2%} | "
              f"{report.sqnr_db:.2f} |", flush=True)


if __name__ == "__main__":
    main()
