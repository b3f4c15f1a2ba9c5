"""BilinearUpSampling2D: Keras' bilinear UpSampling2D that also runs on unknown sizes."""

import keras


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class BilinearUpSampling2D(keras.layers.UpSampling2D):
    """``keras.layers.UpSampling2D(size, interpolation="bilinear")``, any input size.

    Output ``(batch, H * size[0], W * size[1], C)`` for input ``(batch, H, W, C)``,
    the same values as Keras' layer. Keras' resize checks ``size > 0`` in Python,
    which fails on TensorFlow when the height or width is symbolic (e.g.
    ``Model.predict`` on a second image size retraces with relaxed shapes); then
    this layer calls ``tf.image.resize`` (what Keras' TensorFlow backend runs)
    with the symbolic size directly.
    """

    def __init__(self, size=(2, 2), interpolation="bilinear", **kwargs):
        if interpolation != "bilinear":
            raise ValueError("BilinearUpSampling2D only interpolates bilinearly. Received: "
                             f"interpolation={interpolation!r}")
        super().__init__(size=size, interpolation=interpolation, **kwargs)

    def call(self, inputs):
        if keras.backend.backend() == "tensorflow" and inputs.dtype in ("float16", "bfloat16"):
            # float16 / bfloat16 (mixed precision) resized in float32: XLA on CPU rejects
            # the float16 gradient of a bilinear resize ("Seen floating point types of
            # different precisions ... mixed precision is disallowed") in a jit-compiled
            # train step; the values are the same up to float16 rounding.
            outputs = self._resize(keras.ops.cast(inputs, "float32"))
            return keras.ops.cast(outputs, inputs.dtype)
        return self._resize(inputs)

    def _resize(self, inputs):
        dynamic = inputs.shape[1] is None or inputs.shape[2] is None
        if (keras.backend.backend() == "tensorflow" and dynamic
                and self.data_format == "channels_last"):
            import tensorflow as tf

            shape = tf.shape(inputs)
            size = [shape[1] * self.size[0], shape[2] * self.size[1]]
            return tf.image.resize(inputs, size, method="bilinear")
        return super().call(inputs)
