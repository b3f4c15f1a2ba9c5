"""Real data sets that load offline (see each module for its sources)."""

from kronecker_zoo.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from kronecker_zoo.data.fashion_mnist import fashion_mnist

__all__ = ["FASHION_MNIST_CLASSES", "fashion_mnist"]
