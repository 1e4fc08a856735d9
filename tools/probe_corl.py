#!/usr/bin/env python
"""Rank a CoRL checkpoint's test split by each part of its score: the image feature alone, the
virtual text alone (does VES's text retrieve its own identity?) and CoRL's sum.

    python tools/probe_corl.py --config-file configs/Demo/corl.yml \
        --weights output/bench_tipr/corl/seed0/stage1/model_final.pth

CoRL's gallery feature is ``[norm(v); norm(t_hat)]`` and its query feature ``[norm(t); norm(t)]``
(``projects/corl/model.py``), so their dot product is sim(t, v) + sim(t, t_hat); the halves give
the two terms. Prints R1 and mAP of each on ``DATASETS.TESTS[0]``'s test split.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401

# isort: split
import torch  # noqa: E402

from plugins.config import inference_only  # noqa: E402
from plugins.data.build import build_text_dataset, build_text_test_loader  # noqa: E402
from plugins.engine import PluginTrainer, build_config  # noqa: E402
from plugins.engine.arguments import add_extra_imports_argument  # noqa: E402
from plugins.engine.checkpoint import Checkpointer  # noqa: E402
from plugins.evaluation import rank_metrics  # noqa: E402


@torch.no_grad()
def score_parts(cfg, weights):
    """{"v alone", "t_hat alone", "CoRL's sum"} -> {"R1", "mAP"} on the config's test split."""
    cfg = cfg.clone()
    cfg.defrost()
    inference_only(cfg, weights)  # as --eval-only builds it: no training-only parts
    model = PluginTrainer.build_model(cfg)
    if type(model).__name__ != "CoRL" or not model.use_ves:
        raise SystemExit("probe_corl.py needs a CoRL config with its VES branch")
    Checkpointer(model).load(weights)
    model.eval()
    split = build_text_dataset(cfg, cfg.DATASETS.TESTS[0]).test
    loader, num_queries = build_text_test_loader(cfg, split)
    feats = None
    for batch in loader:
        out = model(batch).float()
        if feats is None:
            feats = out.new_zeros(len(loader.dataset), out.shape[1])
        feats[batch["index"]] = out
    half = feats.shape[1] // 2
    queries, gallery = feats[:num_queries], feats[num_queries:]
    q_pids = torch.tensor([c.pid for c in split.captions])
    g_pids = torch.tensor([image.pid for image in split.images])
    parts = {"v alone": slice(0, half), "t_hat alone": slice(half, None), "CoRL's sum": slice(None)}
    results = {}
    for name, part in parts.items():
        metrics = rank_metrics(queries[:, part], gallery[:, part], q_pids, g_pids, topk=(1,))
        results[name] = {"R1": float(metrics["R1"]), "mAP": float(metrics["mAP"])}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="a CoRL checkpoint (either stage)")
    add_extra_imports_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    cfg = build_config(args.config_file, args.opts, args.extra_imports)
    for name, metrics in score_parts(cfg, args.weights).items():
        print(f"{name:12s} R1 {metrics['R1']:6.2f}  mAP {metrics['mAP']:6.2f}")


if __name__ == "__main__":
    main()
