"""Registry model names the tests run over."""

from kronecker_zoo import models

ALL = models.list_models()
# The smallest model of each family: its sizes share the builder and the layer types,
# so per-layer-type properties (XLA compilation, plain fit, the tf_keras bridge) are
# checked once per family.
ONE_PER_FAMILY = [next(n for n in ALL if models.spec(n).family == f) for f in models.FAMILIES]
