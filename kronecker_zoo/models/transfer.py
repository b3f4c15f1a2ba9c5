"""Reusing pretrained weights in a model with another head or input channels.

`transfer_weights(source, target)` copies every layer's weights by name. The head
(``predictions`` / ``logits``; in a ContextNet the class-score layer ``front_out`` and
the context module, which runs on the class scores) is copied when its shape matches; it is left freshly
initialised when its shape differs (another ``num_classes``), when asked
(``fresh_head=True``) or absent (``include_top=False``); a first convolution
whose input channels differ is adapted instead of discarded:
more channels share each old one's weights (``W_new[:, :, j] = W_old[:, :, j mod c_old] /
repeats``), fewer add them up, so an image whose channels are all equal (e.g. grey copied
to RGB, or grey given to an RGB model) gives the pretrained features exactly.
"""

import numpy as np

HEAD_LAYERS = ("predictions", "logits", "front_out", "context")


def is_head_layer(name):
    """Whether layer ``name`` depends on the classes: `HEAD_LAYERS`, or a layer
    ``context_<i>`` / ``context_out`` of a Kronecker context module."""
    return name in HEAD_LAYERS or name.startswith("context_")


def _adapt_input_channels(old, new_shape):
    """A first convolution's kernel ``(kh, kw, c_old, out)`` for ``c_new`` input channels
    that gives the same output on an image whose channels are all equal (e.g. a grey image
    as RGB): more channels share each old one's weights (``new[j] = old[j % c_old] /
    repeats``); fewer add them up (``new[j] = sum of old[i], i % c_new == j``)."""
    c_old, c_new = old.shape[2], new_shape[2]
    if c_new >= c_old:
        index = np.arange(c_new) % c_old
        repeats = np.bincount(index, minlength=c_old)[index]
        return (old[:, :, index, :] / repeats[:, None]).astype(old.dtype)
    new = np.zeros(old.shape[:2] + (c_new,) + old.shape[3:], np.float64)
    for i in range(c_old):
        new[:, :, i % c_new] += old[:, :, i]
    return new.astype(old.dtype)


def transfer_weights(source, target, fresh_head=False, missing="raise"):
    """Copies ``source``'s weights into ``target`` layer by layer (by name).

    The head (`is_head_layer`) is copied when its shapes match, unless
    ``fresh_head``; otherwise it keeps its initialisation. A target layer that
    ``source`` lacks raises (``missing="raise"``) or keeps its initialisation
    (``missing="keep"``: how an ablation model takes a shared front end). Returns the
    names of the target layers left as initialised. Raises ValueError when any other
    layer cannot take the weights; ``target`` is then left as it was.
    """
    if missing not in ("raise", "keep"):
        raise ValueError(f"missing must be 'raise' or 'keep', got {missing!r}")
    source_layers = {layer.name: layer for layer in source.layers}
    skipped, assignments = [], []  # every layer is checked before any weight is set
    for layer in target.layers:
        if not layer.weights:
            continue
        src = source_layers.get(layer.name)
        if src is None:
            if missing == "raise":
                raise ValueError(f"The pretrained model has no layer {layer.name!r}")
            skipped.append(layer.name)
            continue
        old = src.get_weights()
        new_shapes = [tuple(w.shape) for w in layer.weights]
        if fresh_head and is_head_layer(layer.name):
            skipped.append(layer.name)
        elif [tuple(w.shape) for w in old] == new_shapes:
            assignments.append((layer, old))
        elif is_head_layer(layer.name):
            skipped.append(layer.name)
        elif (len(old) >= 1 and old[0].ndim == 4 and old[0].shape[:2] == new_shapes[0][:2]
              and old[0].shape[3] == new_shapes[0][3]
              and [w.shape for w in old[1:]] == [s for s in new_shapes[1:]]):
            assignments.append((layer, [_adapt_input_channels(old[0], new_shapes[0])] + old[1:]))
        else:
            raise ValueError(
                f"Pretrained weights of layer {layer.name!r} have shapes "
                f"{[tuple(w.shape) for w in old]}, the model needs {new_shapes}")
    for layer, weights in assignments:
        layer.set_weights(weights)
    return skipped


def set_backbone_trainable(model, trainable):
    """Freezes (``False``) or unfreezes every layer except the head; returns ``model``.

    Frozen BatchNormalization layers run in inference mode (Keras 3), so a frozen
    backbone keeps its pretrained statistics. Recompile after changing this.
    """
    if not isinstance(trainable, (bool, np.bool_)):
        raise ValueError(f"`trainable` must be True or False. Received: trainable={trainable!r}")
    for layer in model.layers:
        if not is_head_layer(layer.name):
            layer.trainable = bool(trainable)
    return model
