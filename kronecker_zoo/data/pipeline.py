"""tf.data pipelines over in-memory arrays of raw pixels and labels."""

AUGMENTATIONS = (None, "crop_flip")


def pixel_dataset(images, labels, batch_size, shuffle=False, seed=0, augment=None,
                  crop_padding=4):
    """`tf.data.Dataset` of ``(float32 images 0..255, int32 labels)`` batches.

    ``labels``: whole numbers (class ids, per image or per pixel, or one-hot rows); they
    are cast to int32, so soft or smoothed labels are refused.
    Shuffles all examples (with ``seed``, reshuffled every epoch) when asked. The order
    and the augmentation are the same on every run with the same ``seed`` (the order
    also depends on TensorFlow's global seed, e.g. `keras.utils.set_random_seed`, when
    one is set; the augmentation does not).
    ``augment="crop_flip"`` (classification: labels are one class per image) applies the
    standard small-image augmentation to every training example: zero-pad by
    ``crop_padding`` pixels on each side, crop a random ``(H, W)`` window, flip
    left-right with probability 1/2.
    Multi-worker runs shard by element (in-memory tensors have no files to
    shard); every worker shuffles with the same seed, so the shards are disjoint.
    """
    import numbers

    import numpy as np

    from kronecker_zoo import runtime
    from kronecker_zoo.validation import check_class_ids

    runtime.require_extra("tensorflow", "kronecker_zoo.data.pipeline (tf.data)")
    import tensorflow as tf

    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}. Received: {augment!r}")
    check_class_ids(labels, "labels")  # whole numbers: the int32 cast below keeps them
    if augment is not None:
        if np.ndim(labels) == 2 and np.shape(labels)[1] == 1:
            labels = np.reshape(labels, (-1,))  # (N, 1), as keras.datasets.cifar10 gives
        if np.ndim(labels) != 1:
            raise ValueError(f"augment={augment!r} is for one class id per image, labels "
                             f"(N,) or (N, 1); got labels of shape {np.shape(labels)} "
                             "(per-pixel masks would not move with the pixels; one-hot "
                             "rows: pass their argmax)")
        if np.ndim(images) not in (3, 4):
            raise ValueError(f"augment={augment!r} needs images (N, H, W) or (N, H, W, C); "
                             f"got shape {np.shape(images)}")
        if (isinstance(crop_padding, (bool, np.bool_))
                or not isinstance(crop_padding, numbers.Integral) or crop_padding < 0):
            raise ValueError(f"crop_padding must be an int >= 0. Received: {crop_padding!r}")
        crop_padding = int(crop_padding)

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)
    if augment == "crop_flip":
        draw, apply = _crop_flip(tf, crop_padding, seed)
        # the random draws one element after another (deterministic: the same stream on
        # every run; drawn in a parallel map they came in thread order); the crops in
        # parallel
        ds = ds.map(draw).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


def _crop_flip(tf, padding, seed):
    """``(draw, apply)``: ``draw(image, label)`` adds a random crop offset and flip (a
    `tf.random.Generator` seeded by ``seed``); ``apply`` crops the zero-padded image
    there and flips it left-right, returning ``(image', label)``."""
    generator = tf.random.Generator.from_seed(seed)

    def draw(image, label):
        offset = generator.uniform([2], 0, 2 * padding + 1, dtype=tf.int32)
        flip = generator.uniform([], 0, 2, dtype=tf.int32) > 0
        return image, label, offset, flip

    def apply(image, label, offset, flip):
        squeeze = image.shape.rank == 2
        if squeeze:
            image = image[..., None]
        size = tf.shape(image)
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        image = tf.slice(padded, [offset[0], offset[1], 0], size)
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        return (image[..., 0] if squeeze else image), label

    return draw, apply
