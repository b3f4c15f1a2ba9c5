"""Running a fixed-batch .tflite file on any number of inputs with the LiteRT interpreter."""

import os
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from kronecker_zoo.validation import positive_int


class TFLiteRunner:
    """``runner(images) -> outputs`` for a single-input .tflite file: one array, or a
    list of arrays (in the file's output order) for a file with several outputs.

    Inputs are cut into the file's fixed batch, the last batch padded with zeros
    (the padded rows' outputs are dropped). Quantized (int8/uint8) input or output
    tensors are (de)quantized with the file's scale and zero point, so callers
    always pass and get float32. Uses LiteRT's default CPU delegate (XNNPACK).

    Args:
        path: the .tflite file.
        num_threads: interpreter threads. Defaults to `1`.
    """

    def __init__(self, path, num_threads=1):
        num_threads = positive_int(num_threads, "num_threads")
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No .tflite file at {self.path!r}")
        self.num_threads = num_threads
        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"{self.path!r} has {len(inputs)} inputs; only single-input "
                             "files are supported.")
        self._input, self._outputs = inputs[0], outputs
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        self.output_shapes = [tuple(int(d) for d in o["shape"]) for o in outputs]
        self.output_shape = self.output_shapes[0]
        self.batch_size = self.input_shape[0]

    def _quantize(self, x):
        dtype = self._input["dtype"]
        if np.issubdtype(dtype, np.floating):
            return x.astype(dtype)
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    @staticmethod
    def _dequantize(y, detail):
        if np.issubdtype(y.dtype, np.floating):
            return y.astype(np.float32)
        scale, zero = detail["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def invoke(self, batch):
        """Run one batch of exactly the file's input shape; returns its float32 output
        (a list of them for a file with several outputs)."""
        self.interpreter.set_tensor(self._input["index"], self._quantize(batch))
        self.interpreter.invoke()
        got = [self._dequantize(self.interpreter.get_tensor(o["index"]), o)
               for o in self._outputs]
        return got[0] if len(got) == 1 else got

    def __call__(self, images):
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"Inputs of shape {images.shape} do not match the file's input "
                             f"{self.input_shape} (batch first).")
        n, b = len(images), self.batch_size
        outs = [np.empty((n,) + shape[1:], np.float32) for shape in self.output_shapes]
        for start in range(0, n, b):
            batch = images[start:start + b]
            rows = len(batch)
            if rows < b:
                batch = np.concatenate(
                    [batch, np.zeros((b - rows,) + batch.shape[1:], np.float32)])
            got = self.invoke(batch)
            for out, value in zip(outs, got if len(outs) > 1 else [got]):
                out[start:start + rows] = value[:rows]
        return outs[0] if len(outs) == 1 else outs

    def latency_ms(self, runs=50, warmup=10, seed=0):
        """Median and spread of one ``invoke`` (ms), on random 0..255 pixels."""
        positive_int(runs, "runs")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"`warmup` must be an int >= 0. Received: warmup={warmup!r}")
        batch = np.random.default_rng(seed).uniform(0, 255, self.input_shape).astype(np.float32)
        self.interpreter.set_tensor(self._input["index"], self._quantize(batch))
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(1e3 * (time.perf_counter() - start))
        times = np.asarray(times)
        return {"median_ms": float(np.median(times)), "p10_ms": float(np.percentile(times, 10)),
                "p90_ms": float(np.percentile(times, 90)), "runs": runs, "warmup": warmup,
                "num_threads": self.num_threads, "batch_size": self.batch_size}


def run_tflite(path, images, num_threads=1):
    """Float32 outputs of the .tflite file on ``images`` (any count; see `TFLiteRunner`)."""
    return TFLiteRunner(path, num_threads=num_threads)(images)


def benchmark_tflite(path, threads=(1, 2), runs=50, warmup=10):
    """``{num_threads: latency dict}`` (median ms per invoke after ``warmup`` runs)
    with LiteRT's default XNNPACK delegate."""
    if isinstance(threads, int):
        threads = (threads,)
    return {t: TFLiteRunner(path, num_threads=t).latency_ms(runs=runs, warmup=warmup)
            for t in threads}


def benchmark_tflite_interleaved(paths, threads=(1, 2), rounds=20, runs=20, warmup=10):
    """``{path: {num_threads: median ms}}`` measured side by side: in each of ``rounds``
    rounds every (file, thread count) runs ``runs`` timed invokes in turn, so machine
    noise hits all files alike; the result is the median over rounds of each round's
    median. ``warmup`` untimed invokes per interpreter first."""
    positive_int(rounds, "rounds")
    if isinstance(threads, int):
        threads = (threads,)
    runners = {(path, t): TFLiteRunner(path, num_threads=t) for path in paths for t in threads}
    for runner in runners.values():
        runner.latency_ms(runs=1, warmup=warmup)
    medians = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            medians[key].append(runner.latency_ms(runs=runs, warmup=0)["median_ms"])
    return {path: {t: float(np.median(medians[(path, t)])) for t in threads} for path in paths}
