#!/usr/bin/env python
"""Pretrain a tiny CLIP as CLIP was pretrained, on captioned synthetic people no benchmark has.

    python tools/pretrain_synthetic_clip.py --arch tiny-rn --out weights/synthetic-clip/tiny-rn.safetensors
    python tools/pretrain_synthetic_clip.py --arch tiny-vit --out weights/synthetic-clip/tiny-vit.safetensors

The population is ``plugins.synthetic.pretraining`` (identities, seeds and renders disjoint from
every benchmark set; RGB images, a share of them greyscale; several captions per image). The
model is the open_clip CLIP the configs build (``plugins.modeling.clip.build_clip_model``, the
architecture's own activation, 64 x 32 images), trained with CLIP's objective: the symmetric
cross-entropy over the in-batch image-caption similarities, scaled by a learned temperature
(initialised at 1 / 0.07, clamped at 100), AdamW as open_clip trains (betas 0.9 / 0.98, eps 1e-6,
weight decay on weight matrices and embeddings only), linear warm-up then cosine decay. Each step
draws a batch of images without replacement, one of each image's captions and a pad-and-crop
offset, all from the run's seed: a run is reproducible on one machine with one thread count.

Output: ``--out``, an open_clip state dict in safetensors (floating tensors in fp16, which
``MODEL.CLIP.WEIGHTS`` upcasts; position grids stored square, as CLIP's own checkpoints, with
each column repeated so that the loader's bilinear resize gives back the trained 64 x 32 grid
exactly), and ``<out stem>.json``: the command, the file's sha256, the first steps' losses and
parameter sums (``tests/test_pretrained_clip.py`` reruns them), the final loss and the
retrieval R1 on held-out pretraining identities.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import plugins  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugins.benchmarking import cpu_model  # noqa: E402
from plugins.data.captions import tokenize_batch  # noqa: E402
from plugins.evaluation import rank_metrics  # noqa: E402
from plugins.modeling.clip import (  # noqa: E402
    CLIP_PIXEL_MEAN,
    CLIP_PIXEL_STD,
    CLIPDualEncoder,
    build_clip_model,
    trim_token_ids,
)
from plugins.search.folders import sha256_file  # noqa: E402
from plugins.synthetic.pretraining import PretrainingSet  # noqa: E402

CONTEXT_LENGTH = 77  # CLIP's; captions are far shorter and batches are trimmed to their longest
# Fields of the record that a rerun of the first steps must reproduce.
FIRST_STEP_FIELDS = ("losses", "logit_scale", "param_sum", "update_sum")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="tiny-rn", help="MODEL.CLIP.NAME of the model")
    parser.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 32], help="image H W")
    parser.add_argument(
        "--resnet-last-stride",
        type=int,
        default=1,
        help="ResNets: 1 gives a 4x2 attention-pool grid at 64x32 (MODEL.CLIP.RESNET_LAST_STRIDE)",
    )
    parser.add_argument("--vit-stride", type=int, default=0, help="ViTs: patch stride (0: patch)")
    parser.add_argument("--images", type=int, default=40000, help="training images")
    parser.add_argument("--images-per-id", type=int, default=2)
    parser.add_argument("--captions-per-image", type=int, default=4)
    parser.add_argument("--grey-share", type=float, default=0.1)
    parser.add_argument(
        "--template-share",
        type=float,
        default=0.0,
        help="share of captions in the benchmark's sentence templates (the rest: alt-texts)",
    )
    parser.add_argument("--val-images", type=int, default=1000, help="held-out identities' images")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    parser.add_argument("--padding", type=int, default=4, help="pad-and-crop augmentation, pixels")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--log-period", type=int, default=50)
    parser.add_argument(
        "--eval-period", type=int, default=1000, help="held-out evaluations (0: at the end only)"
    )
    parser.add_argument("--record-steps", type=int, default=3, help="first steps to record")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
class RenderedCache:
    """Samples of a ``PretrainingSet`` as tensors, rendered on first use and kept."""

    def __init__(self, samples: PretrainingSet):
        self.samples = samples
        self.images: dict[int, torch.Tensor] = {}
        self.tokens: dict[int, torch.Tensor] = {}
        self.pids: dict[int, int] = {}

    def get(self, i: int):
        if i not in self.images:
            sample = self.samples[i]
            array = np.asarray(sample.image, dtype=np.uint8)
            self.images[i] = torch.from_numpy(array.copy()).permute(2, 0, 1)
            self.tokens[i] = tokenize_batch(sample.captions, CONTEXT_LENGTH)
            self.pids[i] = sample.pid
        return self.images[i], self.tokens[i], self.pids[i]


_MEAN = torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1)


def normalise(images_uint8):
    """(B, 3, H, W) uint8 -> float, normalised with CLIP's mean and std (as MODEL.PIXEL_MEAN/STD)."""
    return (images_uint8.float() - _MEAN) / _STD


def batch_at(cache, indices, generator, padding):
    """Images (pad-and-crop with offsets from ``generator``) and one caption each, drawn from
    ``generator``. Returns (images (B, 3, H, W) float, token ids (B, L) trimmed)."""
    images, tokens = [], []
    choices = torch.randint(0, 1 << 30, (len(indices), 3), generator=generator)
    for row, i in zip(choices.tolist(), indices):
        image, captions, _ = cache.get(int(i))
        tokens.append(captions[row[0] % captions.shape[0]])
        if padding:
            h, w = image.shape[1:]
            padded = F.pad(image, (padding,) * 4)
            top, left = row[1] % (2 * padding + 1), row[2] % (2 * padding + 1)
            image = padded[:, top : top + h, left : left + w]
        images.append(image)
    return normalise(torch.stack(images)), trim_token_ids(torch.stack(tokens))


# ---------------------------------------------------------------------------------------------
# model, loss, optimizer
# ---------------------------------------------------------------------------------------------
def build_model(args):
    torch.manual_seed(args.seed)
    return build_clip_model(
        args.arch,
        image_size=tuple(args.size),
        stride=args.vit_stride or None,
        context_length=CONTEXT_LENGTH,
        resnet_last_stride=args.resnet_last_stride,
        warn_random_init=False,
    )


def clip_loss(encoders, images, token_ids):
    """CLIP's symmetric contrastive loss: cross-entropy of image->text and text->image logits
    (B, B), scaled by the learned ``exp(logit_scale)``; pair i is the positive of row i."""
    image_feats = F.normalize(encoders.encode_image(images), dim=-1)
    text_feats = F.normalize(encoders.encode_text(token_ids), dim=-1)
    logits = encoders.logit_scale.exp() * image_feats @ text_feats.T
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def build_optimizer(model, args):
    """AdamW as open_clip trains: no weight decay on gains, biases, norms and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        (no_decay if skip or "logit_scale" in name else decay).append(p)
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": args.weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step, args):
    """Linear warm-up over ``warmup`` steps, then cosine to 0 (open_clip's ``cosine_lr``)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) * args.lr


def param_sum(model):
    return float(sum(p.detach().double().sum() for p in model.parameters()))


@torch.no_grad()
def evaluate(encoders, cache, batch=500):
    """Text-to-image retrieval on held-out identities: each image's first caption queries every
    image; the same identity's images are the positives. Returns R1 and mAP (percent)."""
    was_training = encoders.training
    encoders.eval()
    n = len(cache.samples)
    image_feats, text_feats, pids = [], [], []
    for start in range(0, n, batch):
        items = [cache.get(i) for i in range(start, min(n, start + batch))]
        images = normalise(torch.stack([image for image, _, _ in items]))
        tokens = trim_token_ids(torch.stack([captions[0] for _, captions, _ in items]))
        image_feats.append(F.normalize(encoders.encode_image(images), dim=-1))
        text_feats.append(F.normalize(encoders.encode_text(tokens), dim=-1))
        pids += [pid for _, _, pid in items]
    encoders.train(was_training)
    pids = torch.tensor(pids)
    metrics = rank_metrics(torch.cat(text_feats), torch.cat(image_feats), pids, pids, topk=(1,))
    return {"R1": round(float(metrics["R1"]), 2), "mAP": round(float(metrics["mAP"]), 2)}


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------
def square_grid(pos_embed, grid):
    """Rows of an (h, w) grid of position embeddings (after one prefix row) on a square grid of
    side max(h, w), each row / column repeated: a bilinear resize (corners not aligned) of the
    square grid back to (h, w) averages copies of one row, so it returns the original exactly.

    pos_embed (Tensor): (1 + h * w, C) -> (1 + s * s, C)
    """
    h, w = grid
    side = max(h, w)
    if side % h or side % w:
        raise ValueError(f"grid {grid} does not tile a square")
    prefix, cells = pos_embed[:1], pos_embed[1:].reshape(h, w, -1)
    cells = cells.repeat_interleave(side // h, dim=0).repeat_interleave(side // w, dim=1)
    return torch.cat([prefix, cells.reshape(side * side, -1)])


def stored_state_dict(model):
    """The model's open_clip state dict as written: square position grids, floats in fp16."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    visual = model.visual
    key = "visual.positional_embedding"
    if key not in state:
        key = "visual.attnpool.positional_embedding"
    state[key] = square_grid(state[key], visual.grid_size)
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def record_path(out):
    return os.path.splitext(out)[0] + ".json"


def command_line(args):
    """The command that reproduces this run (only the options that differ from the defaults)."""
    defaults = vars(parse_args(["--out", args.out]))
    parts = ["python", "tools/pretrain_synthetic_clip.py"]
    for key, value in vars(args).items():
        if key not in ("arch", "out") and value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        parts += [flag] + [str(v) for v in values]
    return " ".join(shlex.quote(p) for p in parts)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def pretrain(args, stop_after=None, log=print):
    """Train per ``args``; returns the run's record (see the module docstring).

    With ``stop_after`` the run stops after that many steps, writes nothing and returns the
    first-steps record only (what ``tests/test_pretrained_clip.py`` compares).
    """
    start = time.time()
    train = PretrainingSet(
        args.images,
        args.images_per_id,
        first_identity=0,
        size=tuple(args.size),
        captions_per_image=args.captions_per_image,
        grey_share=args.grey_share,
        template_share=args.template_share,
    )
    cache = RenderedCache(train)
    model = build_model(args)
    encoders = CLIPDualEncoder(model).train()
    optimizer = build_optimizer(model, args)
    generator = torch.Generator().manual_seed(args.seed + 1)
    initial = [p.detach().clone() for p in model.parameters()]
    order, cursor = torch.randperm(len(train), generator=generator), 0
    losses, first = [], {}
    last_steps = stop_after if stop_after is not None else args.steps
    for step in range(last_steps):
        if cursor + args.batch_size > len(order):  # a new epoch: a new order, no partial batch
            order, cursor = torch.randperm(len(train), generator=generator), 0
        indices = order[cursor : cursor + args.batch_size].tolist()
        cursor += args.batch_size
        images, tokens = batch_at(cache, indices, generator, args.padding)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        loss = clip_loss(encoders, images, tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step + 1 == args.record_steps:
            first = {
                "steps": args.record_steps,
                "losses": [round(v, 6) for v in losses],
                "logit_scale": model.logit_scale.exp().item(),
                "param_sum": param_sum(model),
                "update_sum": float(
                    sum(
                        (p.detach().double() - p0.double()).sum()
                        for p, p0 in zip(model.parameters(), initial)
                    )
                ),
                "threads": torch.get_num_threads(),
            }
            if stop_after is not None and step + 1 >= stop_after:
                return {"first_steps": first}
        if (step + 1) % args.log_period == 0 or step + 1 == last_steps:
            recent = losses[-args.log_period :]
            log(
                f"step {step + 1}/{args.steps}  loss {sum(recent) / len(recent):.4f}  "
                f"temperature 1/{float(model.logit_scale.exp()):.1f}  lr {lr_at(step, args):.2e}  "
                f"rendered {len(cache.images)}  {time.time() - start:.0f} s",
            )
        if args.eval_period and (step + 1) % args.eval_period == 0 and step + 1 < last_steps:
            log(f"step {step + 1}: held-out {evaluate(encoders, val_cache(args))}")
    if stop_after is not None:
        return {"first_steps": first}
    held_out = evaluate(encoders, val_cache(args))
    train_time = time.time() - start
    log(f"held-out identities: text-to-image {held_out}")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    from safetensors.torch import save_file

    metadata = {
        "format": "pt",
        "architecture": args.arch,
        "image_size": f"{args.size[0]}x{args.size[1]}",
        "command": command_line(args),
    }
    save_file(stored_state_dict(model), args.out, metadata=metadata)
    record = {
        "file": os.path.basename(args.out),
        "sha256": sha256_file(args.out),
        "bytes": os.path.getsize(args.out),
        "architecture": args.arch,
        "command": command_line(args),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "first_steps": first,
        "final_loss": round(sum(losses[-args.log_period :]) / len(losses[-args.log_period :]), 4),
        "final_temperature": f"1/{float(model.logit_scale.exp()):.2f}",
        "held_out_text_to_image": held_out,
        "train_seconds": round(train_time),
        "machine": {
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    with open(record_path(args.out), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    log(f"wrote {args.out} (sha256 {record['sha256']}) and {record_path(args.out)}")
    return record


def val_cache(args, _cache={}):  # noqa: B006  (one held-out set per run)
    key = (args.images, args.images_per_id, args.val_images, tuple(args.size))
    if key not in _cache:
        first_identity = -(-args.images // args.images_per_id)  # after the training identities
        samples = PretrainingSet(
            args.val_images,
            args.images_per_id,
            first_identity=first_identity,
            size=tuple(args.size),
            captions_per_image=1,
            grey_share=0.0,
            template_share=args.template_share,
        )
        _cache[key] = RenderedCache(samples)
    return _cache[key]


def main():
    args = parse_args()
    print(f"[pretrain] {command_line(args)}  ({torch.get_num_threads()} threads)", flush=True)
    pretrain(args, log=lambda line: print(f"[pretrain] {line}", flush=True))


if __name__ == "__main__":
    main()
