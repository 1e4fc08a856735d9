#!/usr/bin/env python
"""The embedded demo: synthetic RGBT-PEDES -> fine-tune a text-RGBT model on the CPU -> evaluate -> picture.

    python tools/demo.py                      # what `make demo` runs
    python tools/demo.py --config configs/Demo/clip_sdm_add.yml --ids 200

1. Generates a synthetic RGBT-PEDES set in the official layout once (cached under ``--data``).
2. Evaluates the CLIP the config starts from before any training (zero-shot): the synthetic
   CLIP of ``weights/synthetic-clip`` (``tools/pretrain_synthetic_clip.py``), loaded through
   ``MODEL.CLIP.WEIGHTS`` as every config loads CLIP.
3. Fine-tunes the config's model from it through the plugin's trainer.
4. Evaluates it (metrics table with a line per lighting challenge) and prints the zero-shot
   figure and chance level beside it.
5. Draws ranked lists (query caption, top-10 RGB + thermal pairs, green = right identity) to
   ``<output>/ranked_lists.png``.
Results are on synthetic data and say nothing about real datasets.
"""

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import plugins  # noqa: E402, F401

# isort: split
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugins import synthetic  # noqa: E402
from plugins.config import checkpoint_weights_only  # noqa: E402
from plugins.data.build import build_text_dataset, build_text_test_loader  # noqa: E402
from plugins.engine import (  # noqa: E402
    PluginTrainer,
    build_config,
    plugin_argument_parser,
    train_or_evaluate,  # noqa: E402
)
from plugins.engine.defaults import OutputDirLock  # noqa: E402
from plugins.evaluation.retrieval_evaluator import chance_r1  # noqa: E402
from plugins.evaluation.visualize import draw_ranked_lists, topk_gallery  # noqa: E402
from plugins.evaluation.zero_shot import IMAGE_INPUTS, evaluate_zero_shot  # noqa: E402

DEFAULT_CONFIG = "configs/Demo/mganet.yml"


def pick_queries(split, seed=0):
    """One random query (seeded) per challenge subset and one from the normal images."""
    rng = random.Random(seed)
    in_subset = {i for image_ids in split.subsets.values() for i in image_ids}
    groups = {"normal": [q for q, c in enumerate(split.captions) if c.image_id not in in_subset]}
    for name, image_ids in sorted(split.subsets.items()):
        members = set(image_ids)
        groups[name] = [q for q, c in enumerate(split.captions) if c.image_id in members]
    return [(rng.choice(queries), name) for name, queries in groups.items() if queries]


@torch.no_grad()
def draw_examples(cfg, weights, path):
    """Rank the test gallery for a few captions with the trained model and draw the lists."""
    from fastreid.utils.checkpoint import Checkpointer

    cfg = cfg.clone()
    cfg.defrost()
    checkpoint_weights_only(cfg, weights)  # every weight comes from the trained checkpoint
    model = PluginTrainer.build_model(cfg)
    Checkpointer(model).load(weights)
    model.eval()
    data = build_text_dataset(cfg, cfg.DATASETS.TESTS[0])
    split = data.test
    loader, num_queries = build_text_test_loader(cfg, split)
    feats = torch.zeros(len(loader.dataset), model.embed_dim)
    for batch in loader:
        feats[batch["index"]] = F.normalize(model(batch).float(), dim=1)
    q_feats, g_feats = feats[:num_queries], feats[num_queries:]
    rows = []
    for qi, subset in pick_queries(split):
        query = split.captions[qi]
        order = topk_gallery(q_feats[qi : qi + 1], g_feats, k=len(split.images))[0].tolist()
        correct = [split.images[g].pid == query.pid for g in order]
        first = correct.index(True) + 1 if any(correct) else None
        results = [
            (split.images[g].img_path, split.images[g].t_path, c) for g, c in zip(order, correct)
        ]
        title = f"{subset}: query {qi}, first match at rank {first}"
        rows.append({"caption": query.caption, "title": title, "results": results[:10]})
    draw_ranked_lists(rows, path)
    return path


def describe_start(cfg):
    """Where the model's CLIP comes from, for the summary."""
    if not cfg.MODEL.BACKBONE.PRETRAIN:
        return "random init"
    return f"fine-tuned from {cfg.MODEL.CLIP.WEIGHTS}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--ids", type=int, default=300, help="synthetic identities (70%% train)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--data", default=os.path.join(ROOT, "datasets", "synthetic"))
    parser.add_argument("--output", default="", help="default: the config's OUTPUT_DIR")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()

    start = time.time()
    print(f"[demo] synthetic RGBT-PEDES ({args.ids} identities, seed {args.seed}) in {args.data}")
    if synthetic.ensure_synthetic(args.data, "rgbtpedes", args.ids, args.seed):
        print(f"[demo] generated in {time.time() - start:.0f} s")
    else:
        print("[demo] using the cached copy")
    os.environ["FASTREID_DATASETS"] = args.data
    opts = list(args.opts)
    if args.output:
        opts += ["OUTPUT_DIR", args.output]
    if not os.path.exists(args.config) and os.path.exists(os.path.join(ROOT, args.config)):
        args.config = os.path.join(ROOT, args.config)  # run from another folder
    cfg = build_config(args.config, opts)

    zero_shot = None
    if cfg.MODEL.BACKBONE.PRETRAIN:
        print(f"[demo] zero-shot: the CLIP of {cfg.MODEL.CLIP.WEIGHTS} before fine-tuning")
        with OutputDirLock(cfg.OUTPUT_DIR):
            zero_shot = evaluate_zero_shot(cfg)
        print(f"[demo] zero-shot text-to-RGBT R1 {zero_shot['R1']:.2f}  mAP {zero_shot['mAP']:.2f}")
    train_args = plugin_argument_parser().parse_args(["--config-file", args.config] + opts)
    results = train_or_evaluate(train_args)

    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    split = build_text_dataset(cfg, cfg.DATASETS.TESTS[0]).test
    chance = chance_r1(split)["all"]
    picture = draw_examples(cfg, weights, os.path.join(cfg.OUTPUT_DIR, "ranked_lists.png"))
    print()
    print(
        f"[demo] SYNTHETIC data, {cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.CLIP.NAME}, "
        f"{describe_start(cfg)}); text-to-RGBT over {len(split.captions)} captions and a gallery "
        f"of {len(split.images)} pairs"
    )
    if zero_shot is not None:
        image_input = IMAGE_INPUTS[cfg.MODEL.RETRIEVAL.FUSION]
        print(
            f"[demo]   zero-shot  R1 {zero_shot['R1']:6.2f}  mAP {zero_shot['mAP']:6.2f}  "
            f"(the pretrained CLIP before fine-tuning; image input {image_input})"
        )
    print(
        f"[demo]   fine-tuned R1 {results['R1']:6.2f}  mAP {results['mAP']:6.2f}  "
        f"({cfg.SOLVER.MAX_EPOCH} epochs)"
    )
    print(f"[demo]   chance     R1 {chance:6.2f}  (a random ranking)")
    print(f"[demo] ranked lists: {picture}")
    print(f"[demo] checkpoint: {weights}")
    print(f"[demo] total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
