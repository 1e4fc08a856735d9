#!/usr/bin/env python
"""The embedded demo: synthetic RGBT-PEDES -> train a text-RGBT model on the CPU -> evaluate -> picture.

    python tools/demo.py                      # what `make demo` runs
    python tools/demo.py --config configs/Demo/clip_sdm_add.yml --ids 200

1. Generates a synthetic RGBT-PEDES set in the official layout once (cached under ``--data``).
2. Trains the config's model from random initialisation through the plugin's trainer.
3. Evaluates it (metrics table with a line per lighting challenge) and prints chance level.
4. Draws ranked lists (query caption, top-10 RGB + thermal pairs, green = right identity) to
   ``<output>/ranked_lists.png``.
Results are on synthetic data and say nothing about real datasets.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import plugins  # noqa: E402, F401

# isort: split
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugins.data.build import build_text_dataset, build_text_test_loader  # noqa: E402
from plugins.data.datasets import synthetic  # noqa: E402
from plugins.engine import (  # noqa: E402
    PluginTrainer,
    build_config,
    plugin_argument_parser,
    train_or_evaluate,  # noqa: E402
)
from plugins.evaluation.visualize import draw_ranked_lists, topk_gallery  # noqa: E402

DEFAULT_CONFIG = "configs/Demo/mganet.yml"


def prepare_data(data_root, ids, seed):
    """Generate the synthetic RGBT-PEDES set unless one with the same settings is cached."""
    dataset_dir = os.path.join(data_root, "RGBT-PEDES")
    stamp = os.path.join(dataset_dir, "synthetic.json")
    wanted = {"format": "rgbtpedes", "ids": ids, "seed": seed}
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == wanted:
                print(f"[demo] using cached synthetic RGBT-PEDES in {dataset_dir}")
                return
    print(f"[demo] generating synthetic RGBT-PEDES ({ids} identities, seed {seed}) ...")
    start = time.time()
    synthetic.write_rgbtpedes(data_root, ids, seed=seed, overwrite=True)
    with open(stamp, "w") as f:
        json.dump(wanted, f)
    print(f"[demo] generated in {time.time() - start:.1f} s")


def chance_level(split):
    """Expected R1 and mAP (percent) of a random ranking: mean share of positives in the gallery."""
    per_pid = {}
    for image in split.images:
        per_pid[image.pid] = per_pid.get(image.pid, 0) + 1
    shares = [per_pid[c.pid] / len(split.images) for c in split.captions]
    return 100 * sum(shares) / len(shares)


def pick_queries(split, per_subset=1, total=6):
    """A few query indices: one per challenge subset first, then plain ones."""
    chosen, seen = [], set()
    image_to_subset = {}
    for name, image_ids in sorted(split.subsets.items()):
        for i in image_ids:
            image_to_subset.setdefault(i, name)
    for name in ["normal"] + sorted(split.subsets):
        for qi, query in enumerate(split.captions):
            subset = image_to_subset.get(query.image_id, "normal")
            if subset == name and qi not in seen:
                chosen.append((qi, subset))
                seen.add(qi)
                break
        if len(chosen) >= total:
            break
    return chosen


@torch.no_grad()
def draw_examples(cfg, weights, path):
    """Rank the test gallery for a few captions with the trained model and draw the lists."""
    from fastreid.utils.checkpoint import Checkpointer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False
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
        ranked = topk_gallery(q_feats[qi : qi + 1], g_feats, k=10)[0].tolist()
        results = [
            (split.images[g].img_path, split.images[g].t_path, split.images[g].pid == query.pid)
            for g in ranked
        ]
        rows.append(
            {"caption": query.caption, "title": f"query {qi} ({subset})", "results": results}
        )
    draw_ranked_lists(rows, path)
    return path


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
    prepare_data(args.data, args.ids, args.seed)
    os.environ["FASTREID_DATASETS"] = args.data
    opts = list(args.opts)
    if args.output:
        opts += ["OUTPUT_DIR", args.output]
    train_args = plugin_argument_parser().parse_args(["--config-file", args.config] + opts)
    results = train_or_evaluate(train_args)

    cfg = build_config(args.config, opts)
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    split = build_text_dataset(cfg, cfg.DATASETS.TESTS[0]).test
    chance = chance_level(split)
    picture = draw_examples(cfg, weights, os.path.join(cfg.OUTPUT_DIR, "ranked_lists.png"))
    print()
    print(
        f"[demo] SYNTHETIC data, {cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.CLIP.NAME}, random init)"
    )
    print(
        f"[demo] text-to-RGBT R1 {results['R1']:.2f}  mAP {results['mAP']:.2f}  "
        f"(chance: R1 {chance:.2f}, gallery {len(split.images)} pairs, "
        f"{len(split.captions)} queries)"
    )
    print(f"[demo] ranked lists: {picture}")
    print(f"[demo] checkpoint: {weights}")
    print(f"[demo] total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
