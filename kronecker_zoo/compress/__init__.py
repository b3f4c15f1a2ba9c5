"""Compress trained Keras models into Kronecker-factored (or low-rank) ones.

    from kronecker_zoo import compress
    plan = compress.plan_factorization(model, ratio=5.0)   # shapes, ranks, errors, MACs
    print(plan)
    student = compress.factorize(model, plan=plan)          # a new model; `model` untouched
    distiller = keras.distillation.Distiller(
        teacher=model, student=student,
        distillation_losses=compress.logits_distillation(temperature=4.0),
        student_loss_weight=0.5)
    distiller.compile(optimizer="adam",                      # a student that outputs logits
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, epochs=...)                          # then use `student`

- `nearest_kronecker`: the factors whose Kronecker sum best approximates a kernel.
- `plan_factorization` / `factorize`: per-layer shape and rank search under a parameter
  budget, and the rewrite of a Sequential or functional model.
- `logits_distillation`: Keras' `LogitsDistillation` with an exact KL on logits
  (`LogitKLDivergence`; Keras' default clips probabilities and loses the gradient).
"""

from kronecker_zoo.compress.factorize import (
    FactorizationPlan,
    LayerChoice,
    Skipped,
    factorize,
    plan_factorization,
)
from kronecker_zoo.compress.distillation import LogitKLDivergence, logits_distillation
from kronecker_zoo.compress.nearest import NearestKronecker, nearest_kronecker
from kronecker_zoo.compress.search import Candidate, two_factor_shapes

__all__ = [
    "Candidate",
    "FactorizationPlan",
    "LayerChoice",
    "LogitKLDivergence",
    "NearestKronecker",
    "Skipped",
    "factorize",
    "logits_distillation",
    "nearest_kronecker",
    "plan_factorization",
    "two_factor_shapes",
]
