"""Prebuilt classification and segmentation models (see `list_models`, `get`).

    from kronecker_zoo import models
    models.list_models("classification")
    model = models.get("kron_resnet_8")               # raw pixels 0..255 -> logits
    model = models.kron_resnet(depth=14, rank=2)       # a builder directly

Saved as ``.keras``, a zoo model loads with ``keras.saving.load_model`` only after
``import kronecker_zoo`` (which registers the zoo layers).
"""

from kronecker_zoo.models.context_net import context_net, kron_context_net
from kronecker_zoo.models.dilated_fcn import dilated_fcn
from kronecker_zoo.models.transfer import (
    HEAD_LAYERS,
    is_head_layer,
    set_backbone_trainable,
    transfer_weights,
)
from kronecker_zoo.models.pool_segnet import pool_segnet
from kronecker_zoo.models.registry import (
    FAMILIES,
    MODELS,
    TASKS,
    get,
    list_models,
    spec,
    valid_overrides,
)
from kronecker_zoo.models.resnet import drn, kron_resnet, lowrank_resnet, resnet, separable_resnet

__all__ = [
    "HEAD_LAYERS",
    "is_head_layer",
    "FAMILIES",
    "MODELS",
    "TASKS",
    "context_net",
    "dilated_fcn",
    "drn",
    "get",
    "kron_context_net",
    "kron_resnet",
    "list_models",
    "lowrank_resnet",
    "pool_segnet",
    "resnet",
    "separable_resnet",
    "set_backbone_trainable",
    "spec",
    "transfer_weights",
    "valid_overrides",
]
