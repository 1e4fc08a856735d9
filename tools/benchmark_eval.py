"""Benchmark ``rank_metrics``: its cost over the bare similarity matmul, and its agreement with a
straightforward full-sort reference.

Usage::

    .venv/bin/python tools/benchmark_eval.py [--quick] [--skip-large] [--kinds easy hard random]
                                             [--progress]

Features are synthetic, 512-d float32, L2-normalised, in three kinds:

* ``easy``: structured like text-to-image person retrieval at a realistic difficulty (R1 about
  70 %): every identity has a random unit centre and features are ``centre + noise`` (noise
  norm 2.5 x the centre's);
* ``hard``: the same with noise 3.3 (R1 about 15-20 %), an early checkpoint or a hard dataset;
* ``random``: unit vectors without any identity structure (R1 near 0): most of the gallery
  outranks each query's positives, the worst case of a streamed ranking.

Every gallery identity has >= 2 images, and queries are drawn from gallery items, so each query
has the positives of its identity. Sizes follow the CUHK-PEDES and ICFG-PEDES test splits, plus
10,000 x 1,000,000 (its similarity matrix alone would be 40 GB, so the reference is skipped).

"x matmul" is ``rank_metrics``'s wall time over that of the bare similarity product ``q @ g.T``
in blocks of 2,048 queries (and of at most 131,072 gallery items, which keeps the 1M gallery's
blocks at 1 GB), timed in the same process: the best of five alternating runs of each at the smaller
sizes, one run at 1M.

Each (size, method) runs in a fresh child process (this script with ``--worker``), which builds
the features with a seeded generator, releases the generation temporaries, reads its resident set
size (the baseline: interpreter, libraries, features and pids), resets the kernel's peak-RSS
counter (``/proc/self/clear_refs``) and then runs the method. "peak RSS" is the child's peak
resident set size during the method; "extra" is peak minus baseline.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from plugins.benchmarking import cpu_model, peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402

DIM = 512
# Norm of the per-sample noise relative to the unit identity centre; None: no identity structure.
NOISE = {"easy": 2.5, "hard": 3.3, "random": None}
KINDS = tuple(NOISE)
SEED = 0
TOPK = (1, 5, 10)
TOLERANCE = 1e-6  # on metrics in percent
REPEATS = 5  # timed runs of rank_metrics and of the matmul at the sizes with a reference

SIZES = {
    "cuhk": dict(label="CUHK-PEDES test", num_q=6156, num_g=3074, num_ids=1000, reference=True),
    "icfg": dict(label="ICFG-PEDES test", num_q=19848, num_g=19848, num_ids=1000, reference=True),
    "large": dict(label="large", num_q=10_000, num_g=1_000_000, num_ids=100_000, reference=False),
    # --quick variants
    "large-quick": dict(
        label="large (quick)", num_q=1000, num_g=100_000, num_ids=10_000, reference=False
    ),
}


# ----------------------------------------------------------------------------- data


def make_pids(num_q: int, num_g: int, num_ids: int, seed: int):
    """Gallery ids: every id gets 2 images plus a multinomial share of the rest, shuffled.

    Query ids: each gallery item is the source of ``num_q // num_g`` queries and a random subset of
    items of one more (captions of gallery images), so a query's positives are its id's images.
    """
    rng = np.random.default_rng(seed)
    counts = 2 + rng.multinomial(num_g - 2 * num_ids, np.full(num_ids, 1.0 / num_ids))
    g_pids = rng.permutation(np.repeat(np.arange(num_ids, dtype=np.int64), counts))
    source = np.concatenate(
        [
            np.tile(np.arange(num_g), num_q // num_g),
            rng.choice(num_g, num_q % num_g, replace=False),
        ]
    )
    q_pids = g_pids[rng.permutation(source)]
    return q_pids, g_pids


def _noisy_unit_rows(centres, pids, gen, out, noise_norm, rows_per_step=65536):
    """out[i] = normalise(centres[pids[i]] + noise_norm * gaussian / sqrt(D)), written in steps;
    ``noise_norm`` None: normalise(gaussian), no identity structure."""
    pids_t = torch.from_numpy(pids)
    for start in range(0, len(pids), rows_per_step):
        stop = min(start + rows_per_step, len(pids))
        noise = torch.randn(stop - start, DIM, generator=gen)
        if noise_norm is not None:
            noise.mul_(noise_norm / DIM**0.5).add_(centres[pids_t[start:stop]])
        out[start:stop] = torch.nn.functional.normalize(noise, dim=1)


def make_data(size: str, kind: str = "easy", seed: int = SEED):
    spec = SIZES[size]
    noise_norm = NOISE[kind]
    q_pids, g_pids = make_pids(spec["num_q"], spec["num_g"], spec["num_ids"], seed)
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(spec["num_ids"], DIM, generator=gen), dim=1)
    g = torch.empty(spec["num_g"], DIM, dtype=torch.float32)
    _noisy_unit_rows(centres, g_pids, gen, g, noise_norm)
    q = torch.empty(spec["num_q"], DIM, dtype=torch.float32)
    _noisy_unit_rows(centres, q_pids, gen, q, noise_norm)
    return q, g, q_pids, g_pids


def positives_per_query(q_pids: np.ndarray, g_pids: np.ndarray) -> dict:
    ids, counts = np.unique(g_pids, return_counts=True)
    lookup = dict(zip(ids.tolist(), counts.tolist()))
    per_query = np.array([lookup.get(p, 0) for p in q_pids.tolist()])
    return dict(
        min=int(per_query.min()),
        median=float(np.median(per_query)),
        mean=float(per_query.mean()),
        max=int(per_query.max()),
        without=int((per_query == 0).sum()),
    )


# ----------------------------------------------------------------------------- reference


def reference_metrics(q, g, q_pids, g_pids, topk=TOPK) -> dict:
    """Full similarity matrix, a stable argsort of every row, metrics per row in float64."""
    sim = (q @ g.T).numpy()  # (Q, G) float32, one matmul
    order = np.argsort(-sim, axis=1, kind="stable")  # descending score, lower index first on ties
    del sim
    matches = g_pids[order] == q_pids[:, None]
    del order
    hits = dict.fromkeys(topk, 0)
    total_ap = 0.0
    total_inp = 0.0
    for row in matches:
        ranks = np.flatnonzero(row).astype(np.float64) + 1.0
        if ranks.size == 0:
            continue
        for k in topk:
            hits[k] += int(ranks[0] <= k)
        total_ap += float(np.mean(np.arange(1, ranks.size + 1) / ranks))
        total_inp += ranks.size / ranks[-1]
    num_q = len(q_pids)
    out = {f"R{k}": 100.0 * hits[k] / num_q for k in topk}
    out["mAP"] = 100.0 * total_ap / num_q
    out["mINP"] = 100.0 * total_inp / num_q
    return out


# ----------------------------------------------------------------------------- worker


def _release_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def matmul_baseline(q, g, query_block=2048, gallery_block=131072) -> float:
    """Seconds of the bare similarity product ``q @ g.T``, block by block (results dropped)."""
    t0 = time.perf_counter()
    for a in range(0, q.shape[0], query_block):
        for b in range(0, g.shape[0], gallery_block):
            q[a : a + query_block] @ g[b : b + gallery_block].T
    return time.perf_counter() - t0


def worker(size: str, kind: str, method: str, progress: bool) -> dict:
    from plugins.evaluation.metrics import _compiled_kernel, rank_metrics

    if progress:
        import logging

        logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stderr)

    q, g, q_pids, g_pids = make_data(size, kind)
    _release_free_memory()
    baseline = rss_mb("VmRSS")
    peak_reset = reset_peak_rss()
    t0 = time.perf_counter()
    if method == "reference":
        metrics = reference_metrics(q, g, q_pids, g_pids)
    else:
        metrics = rank_metrics(q, g, q_pids, g_pids, topk=TOPK, progress=progress)
    wall = time.perf_counter() - t0
    peak = peak_rss_mb()  # without a resettable counter: the process's lifetime peak
    matmul = None
    if method == "rank_metrics":
        # In the same process, after the memory figures: the bare matmul, then (at the smaller
        # sizes) four more runs of each, alternating, keeping the best of each.
        matmul = matmul_baseline(q, g)
        for _ in range(REPEATS - 1 if SIZES[size]["reference"] else 0):
            t0 = time.perf_counter()
            rank_metrics(q, g, q_pids, g_pids, topk=TOPK)
            wall = min(wall, time.perf_counter() - t0)
            matmul = min(matmul, matmul_baseline(q, g))
    return dict(
        size=size,
        kind=kind,
        method=method,
        metrics=metrics,
        wall_s=wall,
        matmul_s=matmul,
        compiled=_compiled_kernel() is not None,
        baseline_mb=baseline,
        peak_mb=peak,
        peak_is_lifetime=not peak_reset,
        positives=positives_per_query(q_pids, g_pids),
        data_mb=(q.numel() + g.numel()) * 4 / 2**20,
    )


def run_child(size: str, kind: str, method: str, progress: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", size, kind, method]
    if progress:
        cmd.append("--progress")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def machine_info() -> str:
    model = cpu_model()
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), {mem_gb:.0f} GB RAM; torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; numpy {np.__version__}; "
        f"load average at start {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CUHK size + 1,000 x 100,000 only")
    parser.add_argument("--skip-large", action="store_true", help="skip the 1M-gallery run")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--progress", action="store_true", help="log rank_metrics progress")
    parser.add_argument(
        "--worker", nargs=3, metavar=("SIZE", "KIND", "METHOD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.worker:
        result = worker(*args.worker, args.progress)
        print(json.dumps(result))
        return 0

    sizes = ["cuhk"] if args.quick else ["cuhk", "icfg"]
    if not args.skip_large:
        sizes.append("large-quick" if args.quick else "large")

    print(machine_info())
    print(f"features: {DIM}-d float32, L2-normalised, seed {SEED}; noise per kind {NOISE}")
    rows = []
    failed = False
    compiled = True
    for size in sizes:
        spec = SIZES[size]
        shape = f"{spec['num_q']:,} x {spec['num_g']:,}"
        methods = ["reference", "rank_metrics"] if spec["reference"] else ["rank_metrics"]
        for kind in args.kinds:
            results = {}
            for method in methods:
                print(f"running {size} / {kind} / {method} ...", flush=True)
                results[method] = run_child(size, kind, method, args.progress)
            res = results["rank_metrics"]
            compiled &= res["compiled"]
            pos = res["positives"]
            print(
                f"{shape} ({spec['label']}, {spec['num_ids']:,} ids, {kind}): positives per query "
                f"min {pos['min']}, median {pos['median']:g}, mean {pos['mean']:.2f}, "
                f"max {pos['max']}, queries without positive {pos['without']}"
            )
            print("  metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items()))
            if "reference" in results:
                ref = results["reference"]["metrics"]
                diff = max(abs(ref[k] - res["metrics"][k]) for k in ref)
                same = diff <= TOLERANCE and list(ref) == list(res["metrics"])
                failed |= not same
                verdict = f"{'yes' if same else 'NO'} (max abs diff {diff:.1e})"
            else:
                verdict = "n/a (reference skipped)"
            for method in methods:
                r = results[method]
                ratio = f"{r['wall_s'] / r['matmul_s']:.2f}" if r["matmul_s"] else ""
                rows.append(
                    (
                        shape,
                        kind,
                        f"{res['metrics']['R1']:.1f}",
                        method,
                        f"{r['wall_s']:.2f}",
                        f"{r['matmul_s']:.2f}" if r["matmul_s"] else "",
                        ratio,
                        f"{r['peak_mb'] - r['baseline_mb']:,.0f}",
                        verdict if method == "rank_metrics" else "",
                    )
                )

    print()
    print(
        "extra MB: peak resident memory of the child process while the method ran minus its "
        "resident memory just before (interpreter, torch, features, pids). matmul s: bare "
        "q @ g.T in blocks of 2,048 queries in the same process."
    )
    if not compiled:
        print("WARNING: the compiled counting pass is not built; torch fallback measured")
    print()
    header = ("size (Q x G)", "features", "R1", "method", "wall s", "matmul s", "x matmul")
    header += ("extra MB", "identical?")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * len(header)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if failed:
        print("\nrank_metrics and the reference DISAGREE", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
