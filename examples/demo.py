"""The main demo: what kronecker_zoo does, shown on real Fashion-MNIST images.

    python examples/demo.py

1. The seed identity: a cascade of 3x3 convolutions at dilations 1, 3, 9 is one
   27x27 convolution with the Kronecker product of the three kernels.
2. KroneckerConv2D on real images: factored == materialised == plain Conv2D,
   borders included, with its parameter and MAC counts.
3. The 9x9, 64 -> 64 layer of the benchmark: compression and speed.
4. Yu & Koltun's context module: identity at initialisation, receptive field 67.
5. A linear DilatedStack padded once equals one convolution with its collapsed kernel.
6. A model of all of them saved to .keras and loaded back, outputs identical.
7. The model zoo: the Kronecker ResNet beside its dense twin (parameter report),
   run on the raw images, and a segmentation model on a canvas of several items.
8. A pretrained model, offline: evaluated on the Fashion-MNIST test set, its
   report, and a brief fine-tune on real MNIST digits with plain model.fit.
9. That pretrained model exported to a full-integer int8 TFLite file, verified against
   Keras on the whole test set, its size and latency next to the Keras model's.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kronecker_zoo as kz  # noqa: E402
from examples.finetune import fine_tune_digits  # noqa: E402


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _title(text):
    print(f"\n== {text}")


def _median_ms(fn, runs=50, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def seed_identity(rng):
    _title("1. Seed identity: 3x3 kernels at dilations 1, 3, 9 == one 27x27 Kronecker kernel")
    k0, k1, k2 = (rng.normal(size=(3, 3)) for _ in range(3))
    exact = np.abs(kz.collapse([k0, k1, k2], [1, 3, 9]) - kz.kron(k2, k1, k0)).max()
    overlap = kz.collapse([k0, k1, k2], [1, 2, 4])
    print(f"   max |collapse(cascade) - kron(K2, K1, K0)|      = {exact:.1e}")
    print(f"   3x3 at dilations 1, 2, 4 overlap: kernel {overlap.shape[0]}x{overlap.shape[1]}, "
          "not a Kronecker product (the identity needs dilation == kernel size)")
    print(f"   receptive field of the cascade: {kz.receptive_field([3, 3, 3], [1, 3, 9])} px "
          f"from 27 parameters")


def kronecker_on_images(images):
    _title("2. KroneckerConv2D on real Fashion-MNIST images (28x28, scaled to 0-1)")
    x = images.astype("float32") / 255.0
    outputs = {}
    layer = None
    for execution in ("factored", "materialized"):
        current = kz.KroneckerConv2D(16, 9, factors=[(3, 3, 1, 4), (3, 3, 1, 4)],
                                     execution=execution, bias_initializer="random_normal")
        current.build(x.shape)
        if layer is not None:
            current.set_weights(layer.get_weights())
        layer = layer or current
        outputs[execution] = _np(current(x))
    plain = keras.layers.Conv2D(16, 9, padding="same")
    plain.build(x.shape)
    plain.set_weights([_np(layer.kernel), layer.get_weights()[-1]])
    reference = _np(plain(x))
    for execution, out in outputs.items():
        print(f"   {execution:>12} vs Conv2D(materialised kernel): max abs diff "
              f"{np.abs(out - reference).max():.1e} (output scale {np.abs(reference).max():.2f},"
              " borders included)")
    print(f"   parameters {layer.count_params()} vs dense {layer.dense_equivalent_params()}; "
          f"MACs/image factored {layer.macs((28, 28), execution=None)['factored']:,} vs "
          f"materialised {layer.macs((28, 28), execution=None)['materialized']:,}")


def headline_layer(rng):
    _title("3. 9x9 kernel, 64 -> 64 channels = (3x3, 8->8) (x) (3x3, 8->8); batch 8, 64x64")
    x = rng.normal(size=(8, 64, 64, 64)).astype("float32")
    layers = {e: kz.KroneckerConv2D(64, 9, factors=[(3, 3, 8, 8)] * 2, execution=e)
              for e in ("factored", "materialized")}
    for layer in layers.values():
        layer.build(x.shape)
    layers["materialized"].set_weights(layers["factored"].get_weights())
    macs = layers["factored"].macs((64, 64), execution=None)
    params, dense = layers["factored"].count_params(), layers["factored"].dense_equivalent_params()
    print(f"   parameters {params:,} vs dense {dense:,} ({dense / params:.0f}x fewer); "
          f"MACs {macs['factored']:,} vs {macs['materialized']:,} "
          f"({macs['materialized'] / macs['factored']:.1f}x fewer)")
    times = {}
    for name, layer in layers.items():
        fn = _compiled(layer)
        times[name] = _median_ms(lambda: _np(fn(x)), runs=5, warmup=1)
    print(f"   forward: factored {times['factored']:.1f} ms, materialised "
          f"{times['materialized']:.1f} ms ({times['materialized'] / times['factored']:.1f}x); "
          "see benchmarks/ for the full table")


def _compiled(layer):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda t: layer(t))
    return layer


def context_module(images):
    _title("4. Yu & Koltun context module (basic and large), identity-initialised")
    x = images.astype("float32") / 255.0
    scores = np.concatenate([x, 1.0 - x, x * (1.0 - x)], axis=-1)  # 3 non-negative maps
    for variant in ("basic", "large"):
        module = kz.ContextModule(3, variant=variant, noise_stddev=0.0)
        err = np.abs(_np(module(scores)) - scores).max()
        print(f"   {variant:>5}: {module.count_params():>7,} parameters, receptive field "
              f"{module.receptive_field} px, max |module(x) - x| at init = {err:.1e}")


def dilated_stack(images):
    _title("5. DilatedStack, seed schedule 3x3 at dilations 1, 3, 9, no activation")
    x = images.astype("float32") / 255.0
    stack = kz.DilatedStack(1, 3, [1, 3, 9], pad_once=True, bias_initializer="random_normal")
    y = _np(stack(x))
    kernel, bias = stack.collapsed()
    one = keras.layers.Conv2D(1, kernel.shape[:2], padding="same")
    one.build(x.shape)
    one.set_weights([_np(kernel), _np(bias)])
    print(f"   stack == one 27x27 conv with collapse(kernels): max abs diff "
          f"{np.abs(y - _np(one(x))).max():.1e}, borders included (input padded once)")


def save_and_load(images):
    _title("6. Save a model of these layers to .keras and load it back")
    inputs = keras.Input((None, None, 1))
    h = kz.KroneckerConv2D(16, 9, factors=[(3, 3, 1, 4), (3, 3, 1, 4)], activation="relu")(inputs)
    h = kz.LowRankConv2D(8, 7, rank=2, activation="relu")(h)
    h = kz.DilatedStack(8, 3, [1, 2, 4], activation="relu")(h)
    h = kz.ContextModule(8)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = kz.KroneckerDense(10, factors=[(2, 5), (4, 2)])(h)
    model = keras.Model(inputs, outputs)
    x = images.astype("float32") / 255.0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "demo.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        diff = np.abs(_np(model(x)) - _np(loaded(x))).max()
    print(f"   {model.count_params():,} parameters; outputs after reload differ by {diff:.1e}")


def model_zoo(images):
    _title("7. The model zoo: kron_resnet_8 beside resnet_8 (random weights)")
    dense, kron = kz.models.get("resnet_8"), kz.models.get("kron_resnet_8")
    print("   " + kz.report.compare([dense, kron]).replace("\n", "\n   "))
    logits = _np(kron(images.astype("float32")))   # raw pixels 0..255 in
    print(f"   kron_resnet_8 on the raw images: logits {logits.shape}, all finite: "
          f"{bool(np.isfinite(logits).all())}")
    canvas = np.zeros((1, 56, 112, 1), "float32")
    for i in range(4):
        canvas[0, (i % 2) * 28:(i % 2) * 28 + 28, i * 28:i * 28 + 28] = images[i]
    seg = kz.models.get("kron_context_net_basic", input_shape=(None, None, 1))
    print(f"   kron_context_net_basic on a 56x112 canvas of 4 items: per-pixel logits "
          f"{_np(seg(canvas)).shape}; {kz.report.parameter_report(seg, (56, 112, 1)).macs:,} "
          f"MACs")


def pretrained():
    names = kz.models.list_models("classification", pretrained=True)
    name = "kron_resnet_8" if "kron_resnet_8" in names else names[0]
    _title(f"8. Pretrained {name} (weights shipped in the package, SHA-256 checked)")
    model = kz.models.get(name, weights="fashion_mnist")
    x, y = kz.data.fashion_mnist("test")
    pred = np.argmax(model.predict(x.astype("float32"), batch_size=500, verbose=0), -1)
    print(f"   Fashion-MNIST test accuracy: {100 * (pred == y).mean():.2f}% on {len(y):,} images")
    print("   " + kz.report.parameter_report(model).to_text().splitlines()[-1])
    start = time.time()
    tuned = fine_tune_digits(name, steps=125)
    print(f"   fine-tuned with model.fit on 4,000 MNIST digits (125 steps, "
          f"{time.time() - start:.0f} s): {100 * tuned['accuracy']:.1f}% on "
          f"{tuned['test_examples']:,} held-out digits")
    return name, model


def export_int8(name, model):
    from kronecker_zoo import export

    _title(f"9. {name} exported to TFLite int8 (fixed batch 1, factored Kronecker layers)")
    if keras.backend.backend() != "tensorflow":
        print("   skipped: TFLite export traces the model with TensorFlow; run the demo with "
              "KERAS_BACKEND=tensorflow")
        return
    x, y = kz.data.fashion_mnist("test")
    with tempfile.TemporaryDirectory() as tmp:
        info = export.to_tflite(model, os.path.join(tmp, f"{name}_int8.tflite"),
                                quantization="int8",
                                representative_data=export.pretraining_calibration_data(
                                    name, "fashion_mnist"))
        export.check_tflite_ops(info)
        print(f"   ops: {', '.join(info.ops)} (builtin only, no SPACE_TO_BATCH_ND)")
        report = export.verify_tflite(model, info, x, y)
        print("   " + str(report).replace("\n", "\n   "))
        tflite_ms = export.benchmark_tflite(info, threads=(1,), runs=100)[1]["median_ms"]
        weights = os.path.join(tmp, "model.weights.h5")
        model.save_weights(weights)
        keras_bytes = os.path.getsize(weights)
    one = x[:1].astype("float32")
    keras_ms = _median_ms(lambda: model.predict_on_batch(one))
    print(f"   size: Keras weights {keras_bytes / 1024:.1f} KiB (float32), int8 .tflite "
          f"{info.size_bytes / 1024:.1f} KiB")
    print(f"   latency, one image: Keras {keras_ms:.2f} ms (predict_on_batch), LiteRT int8 "
          f"{tflite_ms:.3f} ms (1 thread, XNNPACK)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python examples/demo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)  # no options: --help prints the steps, unknown ones are errors
    rng = np.random.default_rng(0)
    images, labels = kz.data.fashion_mnist("test")
    images = images[:8]
    names = ", ".join(kz.data.FASHION_MNIST_CLASSES[i] for i in labels[:8])
    print(f"kronecker_zoo {kz.__version__} (Keras {keras.__version__}, backend "
          f"{keras.backend.backend()}); 8 Fashion-MNIST test images: {names}")
    seed_identity(rng)
    kronecker_on_images(images)
    headline_layer(rng)
    context_module(images)
    dilated_stack(images)
    save_and_load(images)
    model_zoo(images)
    name, model = pretrained()
    export_int8(name, model)


if __name__ == "__main__":
    main()
