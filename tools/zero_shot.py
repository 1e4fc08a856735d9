#!/usr/bin/env python
"""Evaluate the CLIP a text-retrieval config fine-tunes from, before any training (zero-shot).

    python tools/zero_shot.py --config-file configs/Demo/tipr_clip_sdm.yml
    python tools/zero_shot.py --config-file configs/CUHKPEDES/irra.yml MODEL.CLIP.WEIGHTS ViT-B-16.pt

The model is CLIPRetrieval on the config's CLIP weights and image input (RGB, thermal, or both
added), as ``plugins.evaluation.zero_shot`` describes; the results go to the log and to
``OUTPUT_DIR/results_zero_shot.json``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401

# isort: split
from plugins.engine import build_config, plugin_argument_parser  # noqa: E402
from plugins.engine.defaults import OutputDirLock, setup_run  # noqa: E402
from plugins.evaluation.zero_shot import evaluate_zero_shot  # noqa: E402


def main():
    args = plugin_argument_parser().parse_args()
    cfg = build_config(args.config_file, args.opts, args.extra_imports)
    with OutputDirLock(cfg.OUTPUT_DIR):
        setup_run(cfg, args)
        results = evaluate_zero_shot(cfg)
    print("zero-shot: " + ", ".join(f"{k} {v:.2f}" for k, v in results.items() if "/" not in k))


if __name__ == "__main__":
    main()
