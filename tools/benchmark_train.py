#!/usr/bin/env python
"""Training-step and encoding throughput of a config's model on synthetic inputs, per precision.

    python tools/benchmark_train.py --config-file configs/CUHKPEDES/irra.yml
    python tools/benchmark_train.py --config-file configs/Demo/irra.yml --steps 3 --warmup 1 \
        --encode-batches 2 MODEL.DEVICE cpu

The model is built at the config's sizes (``MODEL.CLIP.NAME``, ``INPUT.SIZE_TRAIN``,
``SOLVER.IMS_PER_BATCH``, ``INPUT.TEXT.CONTEXT_LENGTH``) from random initialisation (speed does
not depend on the weights), with the config's optimizer. One synthetic batch, shaped as the
config's training loader would give it (images in 0-255, RGBT pairs, caption views, VI-ReID
modalities and captions), is made once on the device and fed to every step, so the figures are
the step's own: no data loading, no host-to-device copy.

For each ``--precision`` (``fp32``; ``bf16`` / ``fp16``: ``SOLVER.AMP`` autocast in that dtype)
the weights are reset to the same initial values, the loss of the batch is computed once (the
numerics check: every autocast loss must lie within ``--tolerance`` of fp32's, relatively), then
``--warmup`` steps and ``--steps`` timed steps run through ``plugins.engine.amp.PrecisionTrainer``
(the step the trainer runs; the runner itself issues no host-device sync, and one step is run
under ``plugins.engine.syncs.HostSyncCounter`` to list the model's own). On a GPU the timed region is bracketed
by ``torch.cuda.synchronize()`` only; peak memory is ``torch.cuda.max_memory_allocated`` since
``reset_peak_memory_stats`` before the warm-up. On the CPU it is the process's peak resident set
size since the kernel's counter was reset before the warm-up (``/proc/self/clear_refs``).

FLOPs per step are counted once, on one fp32 forward + backward, by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention, a multiply-add
counted as 2; elementwise work and the optimizer update are not counted, so they are the FLOPs
of the usual MFU definition). Achieved TFLOP/s = FLOPs per step / step time. MFU divides it by the
device's dense peak for the row's precision (``PEAK_TFLOPS``; fp32 rows use the TF32 peak with
``--tf32``, which also turns TF32 matmuls on for them); unknown devices and the CPU print "n/a"
unless ``--peak-tflops`` is given.

Encoding: the model in eval mode under ``torch.inference_mode`` (and the row's autocast) encodes
``--encode-batches`` batches of ``TEST.IMS_PER_BATCH`` gallery images at ``INPUT.SIZE_TEST`` (and of
captions, for text models) after one warm-up batch: gallery images/s and texts/s.

Data: with ``--loader-batches N`` the config's real training loader (the trainer's, with
``DATALOADER.NUM_WORKERS`` or ``--workers``, reading the dataset under ``FASTREID_DATASETS``)
delivers N timed batches after its first, and its images/s is printed beside the fastest step's
with the number of workers that would keep up at the measured rate per worker.
"""

import argparse
import copy
import math
import os
import sys
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402
from torch.utils import flop_counter  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from plugins.benchmarking import cpu_model, peak_rss_mb, reset_peak_rss  # noqa: E402
from plugins.data import captions  # noqa: E402
from plugins.data.build import TextViews, loads_thermal  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.engine.amp import PrecisionTrainer, step_precision  # noqa: E402
from plugins.engine.optimizer import build_plugin_optimizer  # noqa: E402
from plugins.engine.syncs import HostSyncCounter  # noqa: E402
from plugins.engine.trainer import PluginTrainer, training_task  # noqa: E402

PRECISIONS = {"fp32": (False, "bfloat16"), "bf16": (True, "bfloat16"), "fp16": (True, "float16")}

# Dense (no sparsity) peak TFLOP/s by device-name substring, per precision: NVIDIA's data
# sheets (SXM parts). The first matching name wins, so the longer names come first.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
}

# Training identities of the official splits: the identity classifier's size, which the trainer
# takes from the training set. Other datasets: DEFAULT_IDENTITIES unless --num-classes says.
TRAIN_IDENTITIES = {
    "CUHKPEDES": 11003,
    "ICFGPEDES": 3102,
    "RSTPReid": 3701,
    "SYSUMM01": 395,
    "RegDB": 206,
    "LLCM": 713,
}
DEFAULT_IDENTITIES = 1000

# Words of the synthetic captions: about CUHK-PEDES's mean caption length (~23 words).
_COLOURS = ("black", "white", "red", "blue", "grey", "green", "brown", "yellow")
_CAPTION = (
    "The {0} wears a {1} jacket over a {2} shirt, {3} trousers and {4} shoes. "
    "{5} carries a {6} bag on the left shoulder and walks with a phone in one hand."
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument(
        "--precision",
        default="fp32,bf16",
        help=f"comma-separated, of {', '.join(sorted(PRECISIONS))} (a list, so that the KEY "
        "VALUE overrides after it are not taken for precisions)",
    )
    parser.add_argument("--batch", type=int, default=0, help="0: SOLVER.IMS_PER_BATCH")
    parser.add_argument(
        "--encode-batches", type=int, default=10, help="timed encoding batches (0: skip)"
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=0,
        help="MODEL.HEADS.NUM_CLASSES when the config leaves it 0 (0: TRAIN_IDENTITIES)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=0.0, help="peak for MFU (0: the PEAK_TFLOPS table)"
    )
    parser.add_argument(
        "--tf32", action="store_true", help="fp32 rows on CUDA use TF32 matmuls and convolutions"
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="max |loss - fp32 loss| / |fp32 loss|"
    )
    parser.add_argument(
        "--loader-batches",
        type=int,
        default=0,
        help="also time this many batches of the config's real training loader, reading the "
        "dataset under FASTREID_DATASETS (0: skip)",
    )
    parser.add_argument(
        "--workers", type=int, default=-1, help="loader workers (-1: DATALOADER.NUM_WORKERS)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    args.precision = [p.strip() for p in args.precision.split(",") if p.strip()]
    unknown = [p for p in args.precision if p not in PRECISIONS]
    if unknown or not args.precision:
        parser.error(f"--precision {','.join(unknown)}: expected some of {sorted(PRECISIONS)}")
    flags = [t for t in args.opts if t.startswith("--")]
    if flags or len(args.opts) % 2:
        parser.error(
            f"the config overrides must be KEY VALUE pairs after every --flag; got "
            f"{' '.join(args.opts)}: put {' '.join(flags) or 'the flags'} before the first KEY."
        )
    return args


def task_of(cfg):
    """``training_task``, for the caption and visible-infrared datasets this tool knows."""
    task = training_task(cfg)
    if task == "fastreid":
        raise ValueError(
            f"DATASETS.NAMES={list(cfg.DATASETS.NAMES)}: the benchmark knows caption and "
            "visible-infrared datasets only."
        )
    return task


def synthetic_captions(n, seed):
    """``n`` captions of realistic length, their colours drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        colours = [_COLOURS[int(i)] for i in torch.randint(len(_COLOURS), (5,), generator=g)]
        who, pronoun = ("woman", "She") if torch.rand((), generator=g) < 0.5 else ("man", "He")
        out.append(_CAPTION.format(who, *colours[:4], pronoun, colours[4]))
    return out


def synthetic_batch(cfg, batch_size, device, seed=0):
    """One training batch as the config's loader gives it, on ``device``.

    Text tasks: ``images`` (B, 3, H, W) in 0-255, ``t_images`` for RGBT fusions, ``targets``
    (B,) with ``DATALOADER.NUM_INSTANCE`` captions per identity, ``image_ids`` (B,) and the caption
    views of ``INPUT.TEXT.VIEWS`` (B, L). VI-ReID: ``images``, ``targets``, ``camids``,
    ``modalities`` (per identity K visible then K infrared), ``img_paths`` and, with
    ``DATASETS.VI_CAPTIONS``, ``text`` (B, L).
    """
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.INPUT.SIZE_TRAIN
    k = max(1, cfg.DATALOADER.NUM_INSTANCE)
    batch = {"images": torch.rand(batch_size, 3, h, w, generator=g) * 255}
    texts = synthetic_captions(batch_size, seed)
    if task_of(cfg) == "text":
        batch["targets"] = torch.arange(batch_size) // k
        batch["image_ids"] = torch.arange(batch_size)
        if loads_thermal(cfg):
            batch["t_images"] = torch.rand(batch_size, 3, h, w, generator=g) * 255
        views = TextViews.from_config(cfg)
        rows = [
            views(t, generator=torch.Generator().manual_seed(seed + i)) for i, t in enumerate(texts)
        ]
        for key in rows[0]:
            batch[key] = torch.stack([r[key] for r in rows])
    else:
        # P identities x (K visible + K infrared), as the two-modality PK sampler draws them.
        batch["targets"] = torch.arange(batch_size) // (2 * k)
        batch["modalities"] = (torch.arange(batch_size) // k) % 2
        batch["camids"] = batch["modalities"] * 2
        batch["img_paths"] = [f"synthetic/{i:05d}.jpg" for i in range(batch_size)]
        if cfg.DATASETS.VI_CAPTIONS:
            batch["text"] = captions.tokenize_batch(texts, cfg.INPUT.TEXT.CONTEXT_LENGTH)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_calls(device, call, repeat, warmup=0):
    """Seconds that ``repeat`` calls of ``call()`` take after ``warmup`` untimed ones, between two
    device synchronisations (so on CUDA the warm-up's queued work is not counted, and the timed
    calls' work is)."""
    for _ in range(warmup):
        call()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    _sync(device)
    return time.perf_counter() - start


def _reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def peak_memory_mb(device):
    """GPU: peak allocated since the reset; CPU: peak resident set size (VmHWM)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def peak_tflops(device, precision, tf32, override=0.0):
    """(peak TFLOP/s, where it comes from) for MFU, or (None, "n/a")."""
    if override > 0:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "n/a"
    name = torch.cuda.get_device_name(device)
    key = "tf32" if precision == "fp32" and tf32 else precision
    for part, peaks in PEAK_TFLOPS.items():
        if part in name:
            return peaks[key], f"{part} {key}"
    return None, "n/a"


def _cpu_attention_formulas():
    """torch's SDPA FLOP formulas for the CPU's fused attention kernels, which
    ``FlopCounterMode`` does not map (it knows the CUDA flash / efficient / cudnn ones): the
    kernels take (query, key, value, ...) and (grad_out, query, key, value, ...) as those do."""
    aten = torch.ops.aten
    pairs = (
        ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention"),
        (
            "_scaled_dot_product_flash_attention_for_cpu_backward",
            "_scaled_dot_product_flash_attention_backward",
        ),
    )
    mapping = {}
    for cpu_name, cuda_name in pairs:
        cpu_op, cuda_op = getattr(aten, cpu_name, None), getattr(aten, cuda_name, None)
        formula = flop_counter.flop_registry.get(cuda_op)
        if cpu_op is not None and formula is not None:
            # The registry's formulas already take tensors: mark them so they are not wrapped.
            def raw(*args, _formula=formula, **kwargs):
                return _formula(*args, **kwargs)

            raw._get_raw = True
            mapping[cpu_op] = raw
    return mapping


def count_step_flops(runner):
    """FLOPs of one forward + backward of ``runner``'s model on its batch (no optimizer step).

    Returns:
        tuple: (total FLOPs, {aten op name: FLOPs} of the fused attention kernels).
    """
    data = next(runner._data_loader_iter)
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        loss_dict, _ = runner.forward_losses(data)
        sum(loss_dict.values()).backward()
    runner.optimizer.zero_grad()
    per_op = counter.get_flop_counts().get("Global", {})
    attention = {str(op): n for op, n in per_op.items() if "attention" in str(op)}
    return counter.get_total_flops(), attention


def count_step_syncs(runner, device):
    """Host-device synchronisations of one training step: ``HostSyncCounter``'s (any device:
    scalar reads and data-sized outputs, by the repository line that caused them) and, on CUDA,
    ``torch.cuda.set_sync_debug_mode``'s count. Returns the lines to print."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with HostSyncCounter(REPO) as counter:
                runner.run_step()
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    places = ", ".join(f"{p} x{n}" if n > 1 else p for p, n in sorted(counter.places.items()))
    lines = [
        f"host-device syncs in one training step (plugins.engine.syncs): {counter.count}"
        + (f", at {places}" if places else "")
    ]
    if device.type == "cuda":
        cuda = [w for w in caught if "synchroniz" in str(w.message)]
        lines.append(f"host-device syncs in one training step (torch.cuda): {len(cuda)}")
    return lines


def initial_loss(runner, seed):
    """Total loss of the batch at the current weights, under the runner's precision (float)."""
    data = next(runner._data_loader_iter)
    torch.manual_seed(seed)
    with torch.no_grad():
        loss_dict, _ = runner.forward_losses(data)
    return float(sum(v.float() for v in loss_dict.values()))


def time_steps(runner, steps, warmup, device):
    """(seconds per step, peak memory MB) of ``steps`` steps after ``warmup`` untimed ones."""

    def step():
        runner.run_step()
        runner.iter += 1

    _sync(device)
    _reset_peak_memory(device)
    elapsed = timed_calls(device, step, steps, warmup)
    runner.flush_metrics()  # the deferred losses: raises if a step's loss was not finite
    return elapsed / max(steps, 1), peak_memory_mb(device)


def encode_throughput(cfg, model, precision, device, batches, text_model, seed=0):
    """(gallery images/s, texts/s or None) of the model in eval mode, ``batches`` timed batches."""
    if batches <= 0:
        return None, None
    g = torch.Generator().manual_seed(seed)
    n = cfg.TEST.IMS_PER_BATCH
    h, w = cfg.INPUT.SIZE_TEST
    images = {"images": (torch.rand(n, 3, h, w, generator=g) * 255).to(device)}
    if task_of(cfg) == "vi":
        images["modalities"] = (torch.arange(n, device=device) % 2).long()
    elif loads_thermal(cfg):
        images["t_images"] = (torch.rand(n, 3, h, w, generator=g) * 255).to(device)
    text = None
    if text_model:
        ids = captions.tokenize_batch(synthetic_captions(n, seed), cfg.INPUT.TEXT.CONTEXT_LENGTH)
        text = {"text": ids.to(device)}

    def rate(batch):
        with torch.inference_mode(), precision.autocast():
            return n * batches / timed_calls(device, lambda: model(batch), batches, warmup=1)

    was_training = model.training
    model.eval()
    try:
        return rate(images), (rate(text) if text is not None else None)
    finally:
        model.train(was_training)


def machine_line(device):
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU (CPU run)"
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    return (
        f"machine: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}{cuda} with "
        f"{torch.get_num_threads()} threads; device: {device} ({gpu})"
    )


def _fmt(value, spec):
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def run(args):
    """Benchmark every precision; returns a list of row dicts (also printed as a table)."""
    opts = list(args.opts)
    # Random initialisation, explicitly: PRETRAIN True without a local weights file is an error.
    opts += ["MODEL.WEIGHTS", "", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.CLIP.WEIGHTS", ""]
    cfg = build_config(args.config_file, opts)
    cfg.defrost()
    classes_from = "config"
    if cfg.MODEL.HEADS.NUM_CLASSES == 0:
        name = cfg.DATASETS.NAMES[0]
        classes_from = "--num-classes" if args.num_classes else f"{name}'s training identities"
        default = TRAIN_IDENTITIES.get(name, DEFAULT_IDENTITIES)
        if not args.num_classes and name not in TRAIN_IDENTITIES:
            classes_from = f"default, {name} unknown"
        cfg.MODEL.HEADS.NUM_CLASSES = args.num_classes or default
    batch_size = args.batch or cfg.SOLVER.IMS_PER_BATCH
    device = torch.device(cfg.MODEL.DEVICE)
    text_model = task_of(cfg) == "text"

    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    initial = copy.deepcopy(model.state_dict())
    batch = synthetic_batch(cfg, batch_size, device, args.seed)
    h, w = cfg.INPUT.SIZE_TRAIN
    print(machine_line(device))
    print(
        f"config: {args.config_file}: {cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.CLIP.NAME}), "
        f"batch {batch_size} x {h}x{w}"
        + (f", {cfg.INPUT.TEXT.CONTEXT_LENGTH} tokens" if "text" in batch else "")
        + f"; {cfg.MODEL.HEADS.NUM_CLASSES} identities ({classes_from}); "
        + f"{args.warmup} warm-up + {args.steps} timed steps per precision"
    )

    rows, flops, attention, syncs, fp32_loss = [], None, {}, None, None
    for name in args.precision:
        enabled, dtype = PRECISIONS[name]
        precision = step_precision(cfg, enabled=enabled, dtype=dtype)
        if device.type == "cuda":
            tf32 = args.tf32 and name == "fp32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        model.load_state_dict(initial)
        model.train()
        optimizer, param_wrapper = build_plugin_optimizer(cfg, model)
        runner = PrecisionTrainer(
            model,
            _Repeat(batch),
            optimizer,
            param_wrapper,
            precision=precision,
            log_period=10**9,  # flushed once, after the timed region
        )
        loss = initial_loss(runner, args.seed)
        if name == "fp32":
            fp32_loss = loss
        if flops is None:
            flops, attention = count_step_flops(runner)  # FLOPs do not depend on the precision
        step_s, peak_mb = time_steps(runner, args.steps, args.warmup, device)
        if syncs is None:
            syncs = count_step_syncs(runner, device)
        tflops = flops / step_s / 1e12
        peak, peak_source = peak_tflops(device, name, args.tf32, args.peak_tflops)
        images_s, texts_s = encode_throughput(
            cfg, model, precision, device, args.encode_batches, text_model, args.seed
        )
        rows.append(
            {
                "precision": name + (" (tf32)" if name == "fp32" and args.tf32 else ""),
                "images_s": batch_size / step_s,
                "step_ms": step_s * 1e3,
                "peak_mb": peak_mb,
                "tflops": tflops,
                "mfu": tflops / peak * 100 if peak else None,
                "peak": f"{peak:g} ({peak_source})" if peak else peak_source,
                "loss": loss,
                "encode_images_s": images_s,
                "encode_texts_s": texts_s,
            }
        )
        del runner, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(f"FLOPs per training step (forward + backward, FlopCounterMode): {flops:.4g}")
    if attention:
        share = sum(attention.values()) / max(flops, 1) * 100
        print(
            "attention through fused scaled_dot_product_attention kernels "
            f"({', '.join(sorted(attention))}): {share:.1f}% of the step's FLOPs"
        )
    else:
        print("attention: no fused scaled_dot_product_attention kernel ran")
    for line in syncs or ():
        print(line)
    memory = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    print()
    print(
        f"| precision | images/s | step ms | {memory} | TFLOP/s | MFU % | peak TFLOP/s | loss | "
        "gallery images/s | texts/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['precision']} | {r['images_s']:.1f} | {r['step_ms']:.1f} | {r['peak_mb']:.0f} | "
            f"{r['tflops']:.3g} | {_fmt(r['mfu'], '.1f')} | {r['peak']} | {r['loss']:.5g} | "
            f"{_fmt(r['encode_images_s'], '.1f')} | {_fmt(r['encode_texts_s'], '.1f')} |"
        )
    print()
    failed = []
    for r in rows:
        if fp32_loss is None or r["precision"].startswith("fp32"):
            continue
        rel = abs(r["loss"] - fp32_loss) / max(abs(fp32_loss), 1e-12)
        ok = rel <= args.tolerance
        failed += [] if ok else [r["precision"]]
        print(
            f"numerics: {r['precision']} loss {r['loss']:.6g} vs fp32 {fp32_loss:.6g} on the same "
            f"batch: relative difference {rel:.2e} ({'ok' if ok else 'FAIL'}, "
            f"tolerance {args.tolerance:g})"
        )
    if args.loader_batches > 0:
        print_loader_rate(cfg, args, batch_size, rows, device)
    for r in rows:
        r["flops"] = flops
    return rows, failed


def loader_rate(cfg, batch_size, batches, workers, device):
    """Training images per second the config's own training loader delivers (decode, augment,
    collate, and on CUDA the pinned copy to the GPU), after its first batch (worker start-up).

    Returns:
        tuple: (images/s, workers used).
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.IMS_PER_BATCH = batch_size
    if workers >= 0:
        cfg.DATALOADER.NUM_WORKERS = workers
    loader = PluginTrainer.build_train_loader(cfg)
    stream = iter(loader)
    try:
        # The first batch waits for the workers to start: not timed.
        elapsed = timed_calls(device, stream.__next__, batches, warmup=1)
    finally:
        getattr(loader, "shutdown", lambda: None)()
        del stream
    return batches * batch_size / elapsed, cfg.DATALOADER.NUM_WORKERS


def print_loader_rate(cfg, args, batch_size, rows, device):
    """The loader's images/s beside the fastest step's, and whether it keeps up."""
    rate, workers = loader_rate(cfg, batch_size, args.loader_batches, args.workers, device)
    fastest = max(rows, key=lambda r: r["images_s"])
    needed = fastest["images_s"] / (rate / max(workers, 1))
    verdict = "keeps up" if rate >= fastest["images_s"] else "is the bottleneck"
    print(
        f"training loader ({workers} workers, {args.loader_batches} batches of {batch_size} from "
        f"{', '.join(cfg.DATASETS.NAMES)}): {rate:.1f} images/s; the {fastest['precision']} step "
        f"takes {fastest['images_s']:.1f} images/s: the loader {verdict}"
        + (
            f" (about {math.ceil(needed)} worker{'s' if math.ceil(needed) != 1 else ''} at this "
            "rate per worker)"
            if workers
            else ""
        )
    )


class _Repeat:
    """A "loader" whose iterator yields the same batch forever."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


def main(argv=None):
    rows, failed = run(parse_args(argv))
    if failed:
        print(f"loss of {', '.join(failed)} outside the tolerance of fp32's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
