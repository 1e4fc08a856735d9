#!/usr/bin/env python
"""Compare configs on the synthetic benchmark: several training seeds, mean and spread.

    python tools/benchmark_synthetic.py configs/Demo/mganet_baseline.yml configs/Demo/mganet.yml \
        --seeds 0 1 2 --ids 300
    python tools/benchmark_synthetic.py configs/Demo/tipr_clip_sdm.yml configs/Demo/irra.yml \
        --seeds 0 1 2 --output output/bench_tipr

The synthetic data is written in the layout of the dataset the configs train on (RGBT-PEDES for
text-RGBT, CUHK-PEDES for text-to-image).
Each (config, seed) is fine-tuned from the config's CLIP (the synthetic CLIP of
``weights/synthetic-clip`` for the Demo configs) and evaluated through ``tools/train_net.py``
(one process each); the table gives mean +- standard deviation over seeds of R1 and mAP, overall
and per lighting challenge. Before any training, the CLIP each config starts from is evaluated
once (``tools/zero_shot.py``: CLIP with the config's image input, no method layers; it does not
depend on the training seed): the zero-shot rows, as the papers report CLIP's. Results are on
SYNTHETIC data only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def read_results(path):
    with open(path) as f:
        results = json.load(f)
    return next(iter(results.values())) if "R1" not in results else results


def run(config, seed, data_root, out_dir, opts, reuse=False, eval_only=False):
    """Train + evaluate one config with one seed; returns the results dict.

    With ``reuse``, a run whose ``results.json`` exists is read back instead of trained again.
    With ``eval_only``, the run's ``model_final.pth`` is evaluated again (e.g. with other TEST
    options in ``opts``) into ``<out_dir>/eval``.
    """
    train_dir = out_dir
    if eval_only:
        out_dir = os.path.join(train_dir, "eval")
    results_file = os.path.join(out_dir, "results.json")
    if reuse and os.path.isfile(results_file):
        return read_results(results_file)
    args = ["--config-file", config]
    if eval_only:
        args += ["--eval-only", "MODEL.WEIGHTS", os.path.join(train_dir, "model_final.pth")]
    args += ["SEED", str(seed)]
    run_tool("train_net.py", args, data_root, out_dir, opts, f"{config} seed {seed}")
    return read_results(results_file)


def run_tool(script, args, data_root, out_dir, opts, what):
    """Run ``tools/<script> <args> OUTPUT_DIR <out_dir> <opts>`` in its own process on the
    synthetic data, its output in ``<out_dir>/stdout.txt``."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", script), *args, "OUTPUT_DIR", out_dir]
    env = dict(os.environ, FASTREID_DATASETS=data_root, HF_HUB_OFFLINE="1")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "stdout.txt"), "w") as log:
        proc = subprocess.run(
            cmd + list(opts), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed; see {out_dir}/stdout.txt")


def zero_shot_label(config, opts):
    """The zero-shot model of a config: its CLIP weights and image input (configs that share
    them share one zero-shot evaluation); None for a config that starts from no CLIP weights."""
    import plugins  # noqa: F401
    from plugins.data.datasets.vi_reid import is_vi_dataset
    from plugins.engine import build_config
    from plugins.evaluation.zero_shot import IMAGE_INPUTS

    cfg = build_config(config, opts)
    if not (cfg.MODEL.BACKBONE.PRETRAIN and cfg.MODEL.CLIP.WEIGHTS):
        return None  # no CLIP weights to start from (random init, fast-reid's own ResNets)
    model = os.path.basename(cfg.MODEL.CLIP.WEIGHTS)
    if is_vi_dataset(cfg.DATASETS.TESTS[0]):
        return f"{model}, {cfg.MODEL.META_ARCHITECTURE}'s visual streams"
    return f"{model}, {IMAGE_INPUTS[cfg.MODEL.RETRIEVAL.FUSION]}"


def run_zero_shot(config, data_root, out_dir, opts, reuse=False):
    """Evaluate the CLIP ``config`` starts from (``tools/zero_shot.py``); returns the results."""
    results_file = os.path.join(out_dir, "results_zero_shot.json")
    if reuse and os.path.isfile(results_file):
        return read_results(results_file)
    what = f"zero-shot evaluation of {config}"
    run_tool("zero_shot.py", ["--config-file", config], data_root, out_dir, opts, what)
    return read_results(results_file)


def slug(text):
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_")


def chance_of(args):
    """Expected R1 of a random ranking on the benchmark's test split, under the run's protocol."""
    import plugins  # noqa: F401
    from plugins.data.build import build_text_dataset
    from plugins.data.datasets.vi_reid import is_vi_dataset
    from plugins.engine import build_config
    from plugins.evaluation.retrieval_evaluator import chance_r1

    os.environ["FASTREID_DATASETS"] = args.data
    cfg = build_config(args.configs[0], args.opts)
    if is_vi_dataset(cfg.DATASETS.TESTS[0]):
        return {}  # the galleries are the protocol's draws: no closed form here
    split = build_text_dataset(cfg, cfg.DATASETS.TESTS[0]).test
    return chance_r1(split, cfg.TEST.SUBSET_GALLERY)


# The synthetic writer of each dataset reader the benchmark can train on.
LAYOUTS = {
    "RGBTPEDES": "rgbtpedes",
    "CUHKPEDES": "cuhkpedes",
    "RegDB": "regdb",
    "LLCM": "llcm",
    "SYSUMM01": "sysumm01",
}
TASKS = {
    "rgbtpedes": "text-RGBT",
    "cuhkpedes": "text-to-image",
    "regdb": "VI-ReID",
    "llcm": "VI-ReID",
    "sysumm01": "VI-ReID",
}


def synthetic_layout(args):
    """The synthetic layout the configs train on (all of them must train on the same one)."""
    import plugins  # noqa: F401
    from plugins.engine import build_config

    names = {build_config(c, args.opts).DATASETS.NAMES[0] for c in args.configs}
    unknown = names - set(LAYOUTS)
    if unknown or len(names) != 1:
        raise SystemExit(
            f"the configs train on {sorted(names)}; the benchmark compares configs on one "
            f"synthetic dataset, one of {sorted(LAYOUTS)}."
        )
    return LAYOUTS[names.pop()]


def mean_std(values):
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {spread:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ids", type=int, default=300, help="synthetic identities")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--data", default=os.path.join(ROOT, "datasets", "synthetic"))
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "benchmark_synthetic"))
    parser.add_argument("--metrics", nargs="+", default=["R1", "mAP"])
    parser.add_argument(
        "--reuse", action="store_true", help="read back runs that already have results.json"
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="evaluate the trained checkpoints again (with --opts such as TEST.SUBSET_GALLERY)",
    )
    parser.add_argument(
        "--no-zero-shot", action="store_true", help="skip the zero-shot rows (no evaluation first)"
    )
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every run")
    args = parser.parse_args()

    from plugins import synthetic

    layout = synthetic_layout(args)
    synthetic.ensure_synthetic(args.data, layout, args.ids, args.data_seed)
    zero_shot = {}
    for config in [] if args.no_zero_shot else args.configs:
        label = zero_shot_label(config, args.opts)
        if label is None or label in zero_shot:
            continue
        start = time.time()
        out_dir = os.path.join(args.output, "zero_shot", slug(label))
        if args.eval_only:
            out_dir = os.path.join(out_dir, "eval")
        res = run_zero_shot(config, args.data, out_dir, args.opts, args.reuse)
        zero_shot[label] = res
        print(
            f"[zero-shot: {label}] R1 {res['R1']:.2f} mAP {res['mAP']:.2f} "
            f"({time.time() - start:.0f} s)",
            flush=True,
        )
    table = {}
    for config in args.configs:
        name = os.path.splitext(os.path.basename(config))[0]
        for seed in args.seeds:
            start = time.time()
            out_dir = os.path.join(args.output, name, f"seed{seed}")
            res = run(config, seed, args.data, out_dir, args.opts, args.reuse, args.eval_only)
            table.setdefault(name, []).append(res)
            print(
                f"[{name} seed {seed}] R1 {res['R1']:.2f} mAP {res['mAP']:.2f} "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )

    subsets = sorted({k.split("/")[0] for runs in table.values() for k in runs[0] if "/" in k})
    subsets = [s for s in subsets if s != "i2t"]
    print(
        f"\nSYNTHETIC {TASKS[layout]} benchmark ({layout} layout): {args.ids} identities "
        f"(data seed {args.data_seed}), "
        f"training seeds {args.seeds}; mean +- std over seeds\n"
    )
    chance = chance_of(args)
    for metric in args.metrics:
        header = ["config", f"{metric} all"] + [f"{metric} {s}" for s in subsets]
        header.append(f"{metric} all, per seed")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        if metric == "R1" and chance:
            cells = [f"{chance.get(s, float('nan')):.2f}" for s in ["all"] + subsets]
            print("| " + " | ".join(["chance (random ranking)"] + cells + [""]) + " |")
        for label, res in zero_shot.items():
            cells = [f"{res[metric]:.2f}"]
            cells += [
                f"{res[f'{s}/{metric}']:.2f}" if f"{s}/{metric}" in res else "-" for s in subsets
            ]
            print("| " + " | ".join([f"zero-shot ({label})"] + cells + [""]) + " |")
        for name, runs in table.items():
            cells = [mean_std([r[metric] for r in runs])]
            cells += [
                mean_std([r[f"{s}/{metric}"] for r in runs if f"{s}/{metric}" in r])
                for s in subsets
            ]
            cells.append(", ".join(f"{r[metric]:.2f}" for r in runs))
            print("| " + " | ".join([name] + cells) + " |")
        print()
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump({**table, "zero_shot": zero_shot}, f, indent=1)


if __name__ == "__main__":
    main()
