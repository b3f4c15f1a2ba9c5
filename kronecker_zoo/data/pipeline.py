"""tf.data pipelines over in-memory arrays of raw pixels and labels."""


def pixel_dataset(images, labels, batch_size, shuffle=False, seed=0):
    """`tf.data.Dataset` of ``(float32 images 0..255, int32 labels)`` batches.

    Shuffles all examples (with ``seed``, reshuffled every epoch) when asked.
    Multi-worker runs shard by element (in-memory tensors have no files to
    shard); every worker shuffles with the same seed, so the shards are disjoint.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)
