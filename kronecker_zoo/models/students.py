"""The zoo's students: a trained teacher compressed by `kronecker_zoo.compress`.

``<teacher>_kron<N>x`` / ``<teacher>_lowrank<N>x`` is the teacher's architecture with the
layers below replaced (`factorized.replace_layers`), about N times fewer parameters in
all. Each entry is the plan its recipe chose (``training/configs/<name>.json`` ->
``training/runs/<name>/plan.json``: `compress.plan_factorization` of the published teacher
at that ratio, stem and head kept dense); the published weights are the distilled student.
"""

import inspect

from kronecker_zoo.models.factorized import replace_layers
from kronecker_zoo.models.finetune import HEAD_LAYERS

# name -> (teacher, method, {layer: {"layer": type, "factors": shapes, "rank": r}})
STUDENTS = {}


def student_builder(teacher_builder, layers):
    """A builder with ``teacher_builder``'s signature that returns the student."""

    def build(**kwargs):
        model = teacher_builder(**kwargs)
        present = {layer.name for layer in model.layers}
        specs = {name: spec for name, spec in layers.items()
                 if name in present or name not in HEAD_LAYERS}  # no head: include_top=False
        return replace_layers(model, specs, name=model.name)

    build.__signature__ = inspect.signature(teacher_builder)
    build.__name__ = teacher_builder.__name__
    build.__doc__ = f"{teacher_builder.__name__} with factorized layers {sorted(layers)}."
    return build
