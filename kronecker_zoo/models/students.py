"""The zoo's students: a trained teacher compressed by `kronecker_zoo.compress`.

``<teacher>_kron<N>x`` / ``<teacher>_lowrank<N>x`` is the teacher's architecture with the
layers below replaced (`factorized.replace_layers`), about N times fewer parameters in
all; ``_lowmac`` marks a plan whose layers' MACs were capped (``max_relative_macs``),
``_plain`` a student fine-tuned on the labels alone (no distillation). Each entry is the
plan its recipe chose (``training/configs/<name>.json`` ->
``training/runs/<name>/plan.json``: `compress.plan_factorization` of the published teacher
at that ratio, stem and head kept dense); the published weights are the distilled (or,
``_plain``, fine-tuned) student.
``python training/publish.py training/runs/<name>`` prints the entry of a run not yet here.
"""

import inspect

from kronecker_zoo.models.blocks import channels_last
from kronecker_zoo.models.factorized import replace_layers
from kronecker_zoo.models.transfer import HEAD_LAYERS

# name -> (teacher, method, {layer: {"layer": type, "factors": shapes, "rank": r}})
STUDENTS = {
    "resnet_8_kron5x": ("resnet_8", "kronecker", {
        "stage1_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 4},
        "stage1_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[3, 1, 1, 16], [1, 3, 16, 1]], "rank": 4},
        "stage2_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 16, 16], [3, 3, 1, 2]], "rank": 3},
        "stage2_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 32, 2], [3, 3, 1, 16]], "rank": 8},
        "stage2_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 2, 32], [1, 1, 8, 1]], "rank": 1},
        "stage3_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 16, 32], [3, 3, 2, 2]], "rank": 6},
        "stage3_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 17},
        "stage3_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 64], [1, 1, 32, 1]], "rank": 3},
    }),
    "resnet_8_kron5x_lowmac": ("resnet_8", "kronecker", {
        "stage1_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 4},
        "stage1_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage2_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 16, 32], [3, 3, 1, 1]], "rank": 1},
        "stage2_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage2_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 32], [1, 1, 16, 1]], "rank": 2},
        "stage3_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 16, 64], [3, 3, 2, 1]], "rank": 3},
        "stage3_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 18},
        "stage3_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 64], [1, 1, 32, 1]], "rank": 4},
    }),
    "resnet_20_kron5x": ("resnet_20", "kronecker", {
        "stage1_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 4},
        "stage1_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 1, 2], [1, 1, 16, 8]], "rank": 3},
        "stage2_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 2, 1], [1, 1, 8, 32]], "rank": 3},
        "stage2_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage2_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 32], [1, 1, 16, 1]], "rank": 2},
        "stage2_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage2_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage2_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 32], [3, 1, 32, 1]], "rank": 9},
        "stage2_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 1, 8], [1, 1, 32, 4]], "rank": 9},
        "stage3_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 32, 8], [3, 3, 1, 8]], "rank": 11},
        "stage3_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 18},
        "stage3_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 64], [1, 1, 32, 1]], "rank": 4},
        "stage3_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 18},
        "stage3_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 18},
        "stage3_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 1, 8], [1, 1, 64, 8]], "rank": 12},
        "stage3_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 18},
    }),
    "resnet_20_kron10x": ("resnet_20", "kronecker", {
        "stage1_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 2},
        "stage1_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 16, 4], [3, 3, 1, 4]], "rank": 2},
        "stage2_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 8, 1], [1, 1, 2, 32]], "rank": 3},
        "stage2_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 1, 16], [1, 1, 32, 2]], "rank": 4},
        "stage2_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 32], [1, 1, 16, 1]], "rank": 1},
        "stage2_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 1, 16], [1, 1, 32, 2]], "rank": 4},
        "stage2_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 32], [3, 1, 32, 1]], "rank": 4},
        "stage2_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 32], [3, 1, 32, 1]], "rank": 4},
        "stage2_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 1, 8], [1, 1, 32, 4]], "rank": 4},
        "stage3_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[3, 3, 4, 1], [1, 1, 8, 64]], "rank": 3},
        "stage3_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 8},
        "stage3_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 4, 4], [1, 1, 8, 16]], "rank": 1},
        "stage3_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 8},
        "stage3_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 8},
        "stage3_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 16, 64], [3, 3, 4, 1]], "rank": 3},
        "stage3_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 8},
    }),
    "resnet_20_lowrank5x": ("resnet_20", "lowrank", {
        "stage1_block1_conv1": {"layer": "LowRankConv2D", "rank": 4},
        "stage1_block1_conv2": {"layer": "LowRankConv2D", "rank": 4},
        "stage1_block2_conv1": {"layer": "LowRankConv2D", "rank": 4},
        "stage1_block2_conv2": {"layer": "LowRankConv2D", "rank": 4},
        "stage1_block3_conv1": {"layer": "LowRankConv2D", "rank": 4},
        "stage1_block3_conv2": {"layer": "LowRankConv2D", "rank": 4},
        "stage2_block1_conv1": {"layer": "LowRankConv2D", "rank": 6},
        "stage2_block1_conv2": {"layer": "LowRankConv2D", "rank": 9},
        "stage2_block1_shortcut_conv": {"layer": "LowRankConv2D", "rank": 2},
        "stage2_block2_conv1": {"layer": "LowRankConv2D", "rank": 9},
        "stage2_block2_conv2": {"layer": "LowRankConv2D", "rank": 9},
        "stage2_block3_conv1": {"layer": "LowRankConv2D", "rank": 9},
        "stage2_block3_conv2": {"layer": "LowRankConv2D", "rank": 9},
        "stage3_block1_conv1": {"layer": "LowRankConv2D", "rank": 12},
        "stage3_block1_conv2": {"layer": "LowRankConv2D", "rank": 18},
        "stage3_block1_shortcut_conv": {"layer": "LowRankConv2D", "rank": 4},
        "stage3_block2_conv1": {"layer": "LowRankConv2D", "rank": 18},
        "stage3_block2_conv2": {"layer": "LowRankConv2D", "rank": 18},
        "stage3_block3_conv1": {"layer": "LowRankConv2D", "rank": 18},
        "stage3_block3_conv2": {"layer": "LowRankConv2D", "rank": 18},
    }),
    "resnet_8_lowrank5x": ("resnet_8", "lowrank", {
        "stage1_block1_conv1": {"layer": "LowRankConv2D", "rank": 4},
        "stage1_block1_conv2": {"layer": "LowRankConv2D", "rank": 4},
        "stage2_block1_conv1": {"layer": "LowRankConv2D", "rank": 5},
        "stage2_block1_conv2": {"layer": "LowRankConv2D", "rank": 8},
        "stage2_block1_shortcut_conv": {"layer": "LowRankConv2D", "rank": 1},
        "stage3_block1_conv1": {"layer": "LowRankConv2D", "rank": 11},
        "stage3_block1_conv2": {"layer": "LowRankConv2D", "rank": 17},
        "stage3_block1_shortcut_conv": {"layer": "LowRankConv2D", "rank": 3},
    }),
    "resnet_20_lowrank10x": ("resnet_20", "lowrank", {
        "stage1_block1_conv1": {"layer": "LowRankConv2D", "rank": 2},
        "stage1_block1_conv2": {"layer": "LowRankConv2D", "rank": 2},
        "stage1_block2_conv1": {"layer": "LowRankConv2D", "rank": 2},
        "stage1_block2_conv2": {"layer": "LowRankConv2D", "rank": 2},
        "stage1_block3_conv1": {"layer": "LowRankConv2D", "rank": 2},
        "stage1_block3_conv2": {"layer": "LowRankConv2D", "rank": 2},
        "stage2_block1_conv1": {"layer": "LowRankConv2D", "rank": 2},
        "stage2_block1_conv2": {"layer": "LowRankConv2D", "rank": 4},
        "stage2_block1_shortcut_conv": {"layer": "LowRankConv2D", "rank": 1},
        "stage2_block2_conv1": {"layer": "LowRankConv2D", "rank": 4},
        "stage2_block2_conv2": {"layer": "LowRankConv2D", "rank": 4},
        "stage2_block3_conv1": {"layer": "LowRankConv2D", "rank": 4},
        "stage2_block3_conv2": {"layer": "LowRankConv2D", "rank": 4},
        "stage3_block1_conv1": {"layer": "LowRankConv2D", "rank": 5},
        "stage3_block1_conv2": {"layer": "LowRankConv2D", "rank": 8},
        "stage3_block1_shortcut_conv": {"layer": "LowRankConv2D", "rank": 1},
        "stage3_block2_conv1": {"layer": "LowRankConv2D", "rank": 8},
        "stage3_block2_conv2": {"layer": "LowRankConv2D", "rank": 8},
        "stage3_block3_conv1": {"layer": "LowRankConv2D", "rank": 8},
        "stage3_block3_conv2": {"layer": "LowRankConv2D", "rank": 8},
    }),
    "resnet_20_kron5x_lowmac": ("resnet_20", "kronecker", {
        "stage1_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 4},
        "stage1_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 4},
        "stage1_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 4},
        "stage2_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 8, 32], [3, 3, 2, 1]], "rank": 3},
        "stage2_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage2_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 32], [1, 1, 16, 1]], "rank": 2},
        "stage2_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage2_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage2_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 32], [3, 1, 32, 1]], "rank": 9},
        "stage2_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 9},
        "stage3_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 2, 64], [3, 3, 16, 1]], "rank": 13},
        "stage3_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 18},
        "stage3_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 64], [1, 1, 32, 1]], "rank": 4},
        "stage3_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 18},
        "stage3_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 18},
        "stage3_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 18},
        "stage3_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 18},
    }),
    # The 10x plan with every layer's MACs capped at 0.1x its dense layer's
    # (configs/resnet_20_kron10x_lowmac_plain_e30_lowwd.json), on labels for 30 epochs,
    # weight decay 5e-5: the equal-parameter, equal-MAC twin of
    # resnet_20_lowrank10x_plain_e30_lowwd.
    "resnet_20_kron10x_lowmac_plain_e30_lowwd": ("resnet_20", "kronecker", {
        "stage1_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 2},
        "stage1_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 16, 1], [3, 1, 1, 16]], "rank": 2},
        "stage1_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 16], [3, 1, 16, 1]], "rank": 2},
        "stage2_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 8, 32], [3, 3, 2, 1]], "rank": 1},
        "stage2_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 4},
        "stage2_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 32], [1, 1, 16, 1]], "rank": 1},
        "stage2_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 4},
        "stage2_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 32], [3, 1, 32, 1]], "rank": 4},
        "stage2_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 32], [3, 1, 32, 1]], "rank": 4},
        "stage2_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 32, 1], [3, 1, 1, 32]], "rank": 4},
        "stage3_block1_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 1, 64], [3, 3, 32, 1]], "rank": 4},
        "stage3_block1_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 8},
        "stage3_block1_shortcut_conv": {"layer": "KroneckerConv2D",
            "factors": [[1, 1, 2, 64], [1, 1, 16, 1]], "rank": 1},
        "stage3_block2_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 8},
        "stage3_block2_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 8},
        "stage3_block3_conv1": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 1, 64], [3, 1, 64, 1]], "rank": 8},
        "stage3_block3_conv2": {"layer": "KroneckerConv2D",
            "factors": [[1, 3, 64, 1], [3, 1, 1, 64]], "rank": 8},
    }),
}
# The same factorized start fine-tuned on the labels alone: the same plan
# (training/runs/resnet_20_kron5x_plain/plan.json equals resnet_20_kron5x's).
STUDENTS["resnet_20_kron5x_plain"] = STUDENTS["resnet_20_kron5x"]
# ... and distilled with the lighter setup (T=2, student loss weight 0.9)
# (training/runs/resnet_20_kron5x_t2w09/plan.json equals resnet_20_kron5x's).
STUDENTS["resnet_20_kron5x_t2w09"] = STUDENTS["resnet_20_kron5x"]
# resnet_20_kron10x's plan fine-tuned on labels for 30 epochs, weight decay 1e-4
# (training/runs/resnet_20_kron10x_plain_e30/plan.json equals resnet_20_kron10x's).
STUDENTS["resnet_20_kron10x_plain_e30"] = STUDENTS["resnet_20_kron10x"]
# The same, weight decay 5e-5 instead of 1e-4
# (training/runs/resnet_20_kron10x_plain_e30_lowwd/plan.json equals resnet_20_kron10x's).
STUDENTS["resnet_20_kron10x_plain_e30_lowwd"] = STUDENTS["resnet_20_kron10x"]
# resnet_20_lowrank10x's plan on resnet_20_kron10x_plain_e30_lowwd's recipe (30 epochs on
# labels, weight decay 5e-5): its same-recipe twin
# (training/runs/resnet_20_lowrank10x_plain_e30_lowwd/plan.json equals resnet_20_lowrank10x's).
STUDENTS["resnet_20_lowrank10x_plain_e30_lowwd"] = STUDENTS["resnet_20_lowrank10x"]
# The low-rank 5x plan on labels alone: the same-recipe twin of resnet_20_kron5x_plain
# (training/runs/resnet_20_lowrank5x_plain/plan.json equals resnet_20_lowrank5x's).
STUDENTS["resnet_20_lowrank5x_plain"] = STUDENTS["resnet_20_lowrank5x"]
# resnet_20_kron5x_lowmac's plan (MACs capped at 0.3x per layer) on labels alone: the
# equal-MAC twin of resnet_20_lowrank5x_plain
# (training/runs/resnet_20_kron5x_lowmac_plain/plan.json equals resnet_20_kron5x_lowmac's).
STUDENTS["resnet_20_kron5x_lowmac_plain"] = STUDENTS["resnet_20_kron5x_lowmac"]
# resnet_20_kron10x_lowmac_plain_e30_lowwd's recipe run for 45 epochs
# (training/runs/resnet_20_kron10x_lowmac_plain_e45_lowwd/plan.json equals its plan).
STUDENTS["resnet_20_kron10x_lowmac_plain_e45_lowwd"] = STUDENTS[
    "resnet_20_kron10x_lowmac_plain_e30_lowwd"]
# resnet_20_kron10x's (uncapped) plan on the same 45-epoch recipe
# (training/runs/resnet_20_kron10x_plain_e45_lowwd/plan.json equals resnet_20_kron10x's).
STUDENTS["resnet_20_kron10x_plain_e45_lowwd"] = STUDENTS["resnet_20_kron10x"]
# Its low-rank twin on the same 45-epoch recipe
# (training/runs/resnet_20_lowrank10x_plain_e45_lowwd/plan.json equals resnet_20_lowrank10x's).
STUDENTS["resnet_20_lowrank10x_plain_e45_lowwd"] = STUDENTS["resnet_20_lowrank10x"]


def student_builder(teacher_builder, layers, arguments):
    """A builder that returns the student; it takes only ``arguments`` of the teacher's
    builder (input shape, classes, head, name, the size): the plan fixes everything else."""
    signature = inspect.signature(teacher_builder)
    params = [p for name, p in signature.parameters.items() if name in arguments]

    @channels_last
    def build(**kwargs):
        unknown = sorted(set(kwargs) - {p.name for p in params})
        if unknown:
            raise TypeError(f"A student's architecture is fixed by its plan: it does not take "
                            f"{unknown}")
        model = teacher_builder(**kwargs)
        present = {layer.name for layer in model.layers}
        specs = {name: spec for name, spec in layers.items()
                 if name in present or name not in HEAD_LAYERS}  # no head: include_top=False
        return replace_layers(model, specs, name=model.name)

    build.__signature__ = signature.replace(parameters=params)
    build.__name__ = teacher_builder.__name__
    build.__doc__ = f"{teacher_builder.__name__} with factorized layers {sorted(layers)}."
    return build
