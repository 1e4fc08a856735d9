#!/usr/bin/env python
"""Rank a CoRL checkpoint's test split by each part of its score: the image feature alone, the
virtual text alone (does VES's text retrieve its own identity?) and CoRL's sum.

    python tools/probe_corl.py --config-file configs/Demo/corl.yml \
        --weights output/bench_tipr/corl/seed0/stage1/model_final.pth

CoRL's gallery feature is ``[norm(v); norm(t_hat)]`` and its query feature ``[norm(t); norm(t)]``
(``projects/corl/model.py``), so their dot product is sim(t, v) + sim(t, t_hat); the halves give
the two terms. Prints R1 and mAP of each on ``DATASETS.TESTS[0]``'s test split.

With ``--gradients N`` it measures instead what each stage-2 loss term does to the encoders, on N
training batches from the checkpoint: the norm of its gradient on the image encoder's and on the
text encoder's parameters, and the cosine between each pair of terms' gradients (does one term
dominate the encoders' update, does it pull against another?):

    python tools/probe_corl.py --config-file configs/Demo/corl.yml --gradients 8 \
        --weights output/bench_tipr/corl/seed0/stage1/model_final.pth
"""

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401

# isort: split
import torch  # noqa: E402

from plugins.config import inference_only  # noqa: E402
from plugins.data.build import (  # noqa: E402
    build_text_dataset,
    build_text_test_loader,
    build_text_train_loader,
)
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


ENCODERS = ("image_encoder", "text_encoder")


def loss_gradients(cfg, weights, batches):
    """Stage-2 loss terms' gradients on the encoders, over ``batches`` training batches.

    Returns:
        dict: ``norms[term][encoder]`` (mean gradient L2 norm over the batches) and
        ``cosines[(term_a, term_b)][encoder]`` (mean cosine between the two terms' gradients).
    """
    loader = build_text_train_loader(cfg)
    cfg = cfg.clone()
    cfg.defrost()
    if cfg.MODEL.HEADS.NUM_CLASSES == 0:  # as the trainer: the identity classifier's width
        cfg.MODEL.HEADS.NUM_CLASSES = loader.dataset.num_classes
    model = PluginTrainer.build_model(cfg)
    if type(model).__name__ != "CoRL":
        raise SystemExit("probe_corl.py --gradients needs a CoRL config")
    Checkpointer(model).load(weights)
    model.train()
    params = {name: list(getattr(model, name).parameters()) for name in ENCODERS}
    norms, cosines = {}, {}
    for batch in itertools.islice(iter(loader), batches):
        losses = model(batch)
        grads = {}
        for term, loss in losses.items():
            for name, group in params.items():
                g = torch.autograd.grad(loss, group, retain_graph=True, allow_unused=True)
                flat = [
                    x.reshape(-1) if x is not None else p.new_zeros(p.numel())
                    for x, p in zip(g, group)
                ]
                grads[term, name] = torch.cat(flat)
                norms.setdefault(term, {}).setdefault(name, []).append(grads[term, name].norm())
        for a, b in itertools.combinations(losses, 2):
            for name in ENCODERS:
                cos = torch.nn.functional.cosine_similarity(grads[a, name], grads[b, name], dim=0)
                cosines.setdefault((a, b), {}).setdefault(name, []).append(cos)

    def mean(values):
        return float(torch.stack(values).mean())

    return {
        "norms": {t: {n: mean(v) for n, v in by.items()} for t, by in norms.items()},
        "cosines": {pair: {n: mean(v) for n, v in by.items()} for pair, by in cosines.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="a CoRL checkpoint (either stage)")
    parser.add_argument(
        "--gradients", type=int, default=0, metavar="N",
        help="measure the stage-2 loss terms' gradients on the encoders over N training batches",
    )  # fmt: skip
    add_extra_imports_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    cfg = build_config(args.config_file, args.opts, args.extra_imports)
    if args.gradients > 0:
        found = loss_gradients(cfg, args.weights, args.gradients)
        print(f"gradient L2 norm over {args.gradients} batches: " + ", ".join(ENCODERS))
        for term, by in found["norms"].items():
            print(f"{term:12s} " + "  ".join(f"{by[n]:10.4g}" for n in ENCODERS))
        print("cosine between two terms' gradients: " + ", ".join(ENCODERS))
        for (a, b), by in found["cosines"].items():
            print(f"{a} / {b}: " + "  ".join(f"{by[n]:+.3f}" for n in ENCODERS))
        return
    for name, metrics in score_parts(cfg, args.weights).items():
        print(f"{name:12s} R1 {metrics['R1']:6.2f}  mAP {metrics['mAP']:6.2f}")


if __name__ == "__main__":
    main()
