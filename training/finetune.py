"""Worked fine-tuning examples, pretrained vs from scratch with the same steps.

    python training/finetune.py digits --model resnet_8 --steps 125
    python training/finetune.py nuclei --model kron_context_net_basic --steps 150

``digits``: Fashion-MNIST classifier -> MNIST 5k digits (held-out accuracy).
``nuclei``: fashion-scenes segmenter -> stardist nucleus tiles (held-out foreground IoU).
The recipes live in ``kronecker_zoo.finetune_examples``; this prints both runs as JSON.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kronecker_zoo import finetune_examples  # noqa: E402

EXAMPLES = {
    "digits": (finetune_examples.fine_tune_digits, "resnet_8", 125),
    "nuclei": (finetune_examples.fine_tune_nuclei, "kron_context_net_basic", 150),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", choices=sorted(EXAMPLES))
    parser.add_argument("--model", default=None, help="zoo model (default per example)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run, default_model, default_steps = EXAMPLES[args.example]
    kwargs = {"steps": args.steps or default_steps, "seed": args.seed}
    model = args.model or default_model
    results = [run(model, pretrained=p, **kwargs) for p in (True, False)]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
