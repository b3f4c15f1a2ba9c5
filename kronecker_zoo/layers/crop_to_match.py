"""CropToMatch: crop a feature map to the spatial size of a reference map."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class CropToMatch(keras.layers.Layer):
    """Crops ``x`` to the height and width of ``reference`` (top-left aligned).

    Used after an upsampling that rounds the size up (pooling with `"same"`
    padding gives ``ceil(H / 2)``; upsampling by 2 then gives ``H`` or ``H + 1``),
    so encoder-decoders accept any input size.

    Call: ``CropToMatch()([x, reference])`` with ``x`` of shape
    `(batch, H', W', C)`, ``reference`` of shape `(batch, H, W, C_ref)`, ``H' >= H``,
    ``W' >= W`` (a smaller input is a ValueError wherever its size is known: in eager
    calls and at graph construction; not inside a graph traced with unknown sizes).
    Output: `(batch, H, W, C)`.
    """

    def call(self, inputs):
        x, reference = inputs
        # Sizes known when the layer runs (eager, or static in a graph) are checked here
        # too: slicing past the end would return ``x`` uncropped without an error.
        _check_can_crop(x.shape, reference.shape)
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        _check_can_crop(x_shape, ref_shape)
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def _check_can_crop(x_shape, ref_shape):
    """ValueError if a known height or width of ``x`` is below the reference's."""
    for axis, name in ((1, "height"), (2, "width")):
        if (x_shape[axis] is not None and ref_shape[axis] is not None
                and x_shape[axis] < ref_shape[axis]):
            raise ValueError(
                f"CropToMatch can only crop: the input {name} {x_shape[axis]} is smaller "
                f"than the reference {name} {ref_shape[axis]}. "
                f"Received shapes {tuple(x_shape)} and {tuple(ref_shape)}"
            )
