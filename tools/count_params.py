#!/usr/bin/env python
"""Count a model's parameters from its config, without weights, on the CPU.

    python tools/count_params.py --config-file configs/RGBTPEDES/mganet.yml
    python tools/count_params.py --config-file configs/RGBTPEDES/mganet.yml --num-classes 1266 \
        MODEL.MGANET.FUSION add
    python tools/count_params.py --config-file configs/CUHKPEDES/irra.yml --num-classes 11003
    python tools/count_params.py --config-file configs/CUHKPEDES/corl.yml --flops

Prints the total and trainable counts, a breakdown per top-level module (a parameter shared
by two modules is counted once, under the first) and the count of the inference model (built
without the training-only parts, as ``--eval-only`` builds it). Where a paper publishes the count of the same
configuration (ViT-B/16, 11,003 CUHK-PEDES identities), it is printed beside ours.

``--flops`` (text retrieval models) also counts the inference model's multiply-adds for one
gallery image at ``INPUT.SIZE_TEST`` (``encode_image``) and one caption of
``INPUT.TEXT.CONTEXT_LENGTH`` tokens (``encode_text``) with ``torch.utils.flop_counter``
(matmuls, convolutions, attention; the "FLOPs" of thop / fvcore, which count a multiply-add as one).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
from fastreid.modeling.meta_arch import build_model  # noqa: E402

from plugins.engine import build_config  # noqa: E402

# Published counts at CLIP ViT-B/16 with CUHK-PEDES's 11,003 training identities, keyed by
# (meta-architecture, CLIP model, identities): (millions, where the figure is printed).
PAPER_COUNTS = {
    ("CLIPRetrieval", "ViT-B-16", 11003): (155.26, "CLIP baseline, CoRL (IJCAI'25) Table 5"),
    ("IRRA", "ViT-B-16", 11003): (194.54, "IRRA, CoRL (IJCAI'25) Table 5"),
    ("CoRL", "ViT-B-16", 11003): (155.66, "CoRL (IJCAI'25) Table 5"),
}


def paper_count(cfg):
    """The published count for this configuration, or None: (millions, source)."""
    if cfg.MODEL.RETRIEVAL.FUSION != "rgb":
        return None
    key = (cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.CLIP.NAME, cfg.MODEL.HEADS.NUM_CLASSES)
    return PAPER_COUNTS.get(key)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="MODEL.HEADS.NUM_CLASSES (training identities); matters only for models with an "
        "identity classifier",
    )
    parser.add_argument(
        "--flops",
        action="store_true",
        help="also count the inference multiply-adds of one gallery image and one caption",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def count(model):
    """Total and trainable counts, and (name, total, trainable) per top-level module."""
    seen = set()
    rows = []
    for name, child in model.named_children():
        total = trainable = 0
        for p in child.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        rows.append((name, total, trainable))
    own = [p for p in model.parameters(recurse=False) if id(p) not in seen]
    if own:
        n = sum(p.numel() for p in own)
        rows.append(("(own)", n, sum(p.numel() for p in own if p.requires_grad)))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable, rows


def inference_macs(cfg, model):
    """Multiply-adds (G) of ``encode_image`` on one image and ``encode_text`` on one caption."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from plugins.data.captions import tokenize

    if not callable(getattr(model, "encode_text", None)):
        raise SystemExit(f"--flops counts text retrieval models; {type(model).__name__} is not one")
    h, w = cfg.INPUT.SIZE_TEST
    batch = {"images": torch.rand(1, 3, h, w) * 255}
    if cfg.MODEL.RETRIEVAL.FUSION != "rgb":
        batch["t_images"] = torch.rand(1, 3, h, w) * 255
    ids = tokenize("a person", cfg.INPUT.TEXT.CONTEXT_LENGTH)[None]
    # Train mode (no dropout in CLIP): in eval mode without gradient nn.MultiheadAttention
    # takes a fused kernel that the counter does not see.
    torch.nn.Module.train(model, True)
    macs = []
    for encode in (lambda: model.encode_image(batch), lambda: model.encode_text(ids)):
        with FlopCounterMode(display=False) as counter:
            encode()
        macs.append(counter.get_total_flops() / 2e9)
    return tuple(macs)


def main(argv=None):
    args = parse_args(argv)
    opts = list(args.opts)
    if args.num_classes is not None:
        opts += ["MODEL.HEADS.NUM_CLASSES", str(args.num_classes)]
    # Counts do not depend on the weights: build full-size configs from random initialisation,
    # explicitly (PRETRAIN True without a MODEL.CLIP.WEIGHTS file is an error).
    opts += ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
    opts += ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.CLIP.WEIGHTS", ""]
    cfg = build_config(args.config_file, opts)
    model = build_model(cfg)
    total, trainable, rows = count(model)
    print(f"{cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.CLIP.NAME}, {args.config_file})")
    width = max(len(name) for name, _, _ in rows + [("total", 0, 0)])
    print(f"{'module':<{width}}  {'parameters':>14}  {'trainable':>14}")
    for name, n, t in rows:
        print(f"{name:<{width}}  {n:>14,}  {t:>14,}")
    print(f"{'total':<{width}}  {total:>14,}  {trainable:>14,}  ({total / 1e6:.2f}M)")
    # What evaluation builds: without the training-only parts (classifiers, text towers of the
    # VI-ReID methods, auxiliary heads), as --eval-only does.
    infer_cfg = build_config(args.config_file, opts + ["MODEL.TRAINING_HEADS", "False"])
    infer_model = build_model(infer_cfg)
    inference = sum(p.numel() for p in infer_model.parameters())
    print(
        f"{'inference':<{width}}  {inference:>14,}  {'':>14}  ({inference / 1e6:.2f}M, "
        "without the training-only parts)"
    )
    if args.flops:
        image, text = inference_macs(infer_cfg, infer_model)
        size = "x".join(map(str, cfg.INPUT.SIZE_TEST))
        tokens = cfg.INPUT.TEXT.CONTEXT_LENGTH
        print(
            f"inference multiply-adds: {image:.2f}G per image ({size}) + {text:.2f}G per caption "
            f"({tokens} tokens) = {image + text:.2f}G"
        )
    paper = paper_count(cfg)
    if paper is not None:
        millions, source = paper
        line = f"paper: {millions:.2f}M ({source}); ours {round(total / 1e6, 2) - millions:+.2f}M"
        if trainable != total:
            # Parameters built without gradient (CoRL's MODEL.CORL.VES_ENCODERS frozen copies)
            # hold weights but never train; a paper may count them or not.
            line += (
                f", {round(trainable / 1e6, 2) - millions:+.2f}M without the "
                f"{total - trainable:,} that never train"
            )
        print(line)
    return total, trainable, inference


if __name__ == "__main__":
    main()
