#!/usr/bin/env python
"""Training-step and encoding throughput of a text-retrieval config, in fp32 and bf16 autocast.

    python tools/benchmark_train.py --config-file configs/CUHKPEDES/irra.yml [--steps 20]
        [--warmup 3] [--precision fp32 bf16] [--batch 64] [--peak-tflops T] [KEY VALUE ...]

Runs ``--steps`` timed training steps (after ``--warmup`` untimed ones) of the config's model on
one synthetic batch at the config's sizes (``INPUT.SIZE_TRAIN``, ``SOLVER.IMS_PER_BATCH``,
``INPUT.TEXT.CONTEXT_LENGTH``, the caption views it trains on; RGB + thermal for RGBT models):
forward and loss under ``torch.autocast`` for bf16, backward, the config's optimizer step. It
prints images/s, ms per step, peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: the
process's peak resident set), the FLOPs of one step (forward + backward, counted once with
``torch.utils.flop_counter.FlopCounterMode``), achieved TFLOP/s and model FLOPs utilisation
against the device's dense peak for that precision (known GPUs, or ``--peak-tflops``; "n/a"
otherwise), the loss of the first step in each precision, and gallery images/s of the image
encoder in eval mode. The data loader is not part of the timed step.
"""

import argparse
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from plugins.data.build import TextViews  # noqa: E402
from plugins.engine.defaults import build_config  # noqa: E402
from plugins.engine.optimizer import build_plugin_optimizer  # noqa: E402

# Dense peak TFLOP/s per precision (vendor figures, SXM parts; fp32 without TF32).
PEAK_TFLOPS = {
    "H100": {"bf16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}
CAPTION = "a woman with long black hair wears a red coat, blue jeans and white shoes"


def synthetic_batch(cfg, batch_size, device):
    """One training batch at the config's sizes: images (and thermal images), every caption
    view the config trains on, identities in pairs."""
    height, width = cfg.INPUT.SIZE_TRAIN
    views = TextViews(tuple(cfg.INPUT.TEXT.VIEWS), cfg.INPUT.TEXT.CONTEXT_LENGTH)
    torch.manual_seed(0)
    items = [views(CAPTION) for _ in range(batch_size)]
    batch = {k: torch.stack([item[k] for item in items]).to(device) for k in items[0]}
    batch["images"] = (torch.rand(batch_size, 3, height, width) * 255).to(device)
    batch["t_images"] = (torch.rand(batch_size, 3, height, width) * 255).to(device)
    num_classes = max(cfg.MODEL.HEADS.NUM_CLASSES, 1)
    batch["targets"] = (torch.arange(batch_size) // 2 % num_classes).to(device)
    return batch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak(device, precision, override):
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def train_step(model, optimizer, batch, precision, device):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        losses = model(batch)
        total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return total.detach()  # no .item(): the step issues no host-device sync


def measure(cfg, precision, args, device):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer, _ = build_plugin_optimizer(cfg, model)
    batch = synthetic_batch(cfg, args.batch or cfg.SOLVER.IMS_PER_BATCH, device)
    size = len(batch["targets"])
    with FlopCounterMode(display=False) as counter:
        first_loss = float(train_step(model, optimizer, batch, precision, device))
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        train_step(model, optimizer, batch, precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step(model, optimizer, batch, precision, device)
    sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    if not torch.isfinite(loss):
        raise RuntimeError(f"{precision}: non-finite loss {float(loss)}")
    peak = device_peak(device, precision, args.peak_tflops)
    achieved = flops / step_s / 1e12
    encode = encode_rate(model, batch, precision, device, args)
    return {
        "precision": precision,
        "images/s": size / step_s,
        "ms/step": 1000 * step_s,
        "peak MB": peak_memory_mb(device),
        "GFLOP/step": flops / 1e9,
        "TFLOP/s": achieved,
        "MFU": f"{100 * achieved / peak:.1f}% of {peak:g}" if peak else "n/a",
        "first loss": first_loss,
        "encode images/s": encode,
    }


@torch.inference_mode()
def encode_rate(model, batch, precision, device, args):
    """Gallery images per second of the image encoder (eval mode, ``TEST.IMS_PER_BATCH``-sized
    batches cut from the training batch)."""
    model.eval()
    images = {k: batch[k] for k in ("images", "t_images")}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        model(images)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.encode_batches):
            model(images)
        sync(device)
    model.train()
    return args.encode_batches * len(batch["images"]) / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"]
    )
    parser.add_argument("--batch", type=int, default=0, help="default SOLVER.IMS_PER_BATCH")
    parser.add_argument("--encode-batches", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args()
    cfg = build_config(args.config_file, args.opts)
    if cfg.MODEL.HEADS.NUM_CLASSES <= 0:
        # Set from the training set in a real run; here the batch's identities (pairs).
        cfg.MODEL.HEADS.NUM_CLASSES = max((args.batch or cfg.SOLVER.IMS_PER_BATCH) // 2, 1)
    device = torch.device(cfg.MODEL.DEVICE)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device: {device} ({name or 'cpu'}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {cfg.MODEL.META_ARCHITECTURE} {cfg.MODEL.CLIP.NAME}, "
        f"input {list(cfg.INPUT.SIZE_TRAIN)}, batch {args.batch or cfg.SOLVER.IMS_PER_BATCH}, "
        f"{cfg.INPUT.TEXT.CONTEXT_LENGTH} tokens; {args.steps} timed steps after {args.warmup}"
    )
    rows = [measure(cfg, p, args, device) for p in args.precision]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "|".join(["---"] * len(keys)) + "|")
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
