"""The zoo's data sets, offline: Fashion-MNIST and the scenes composed from it, and the
input pipeline the recipes train with (see each module for its sources)."""

from kronecker_zoo.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from kronecker_zoo.data.fashion_mnist import fashion_mnist
from kronecker_zoo.data.pipeline import pixel_dataset
from kronecker_zoo.data.fashion_scenes import (
    compose_scenes,
    fashion_scenes,
    fashion_scenes_dataset,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "compose_scenes",
    "fashion_mnist",
    "fashion_scenes",
    "fashion_scenes_dataset",
    "pixel_dataset",
]
