"""Two CPU processes (gloo, torch DDP) train exactly like one process on the concatenated batch.

Every batch-level loss gathers the whole global batch (``plugins.modeling.distributed``); the
test runs one training step of each model in two processes, each on its half of a batch, and
compares the loss and every parameter's DDP-averaged gradient with one process on the whole
batch. The samplers' sharding and an end-to-end ``tools/train_net.py --num-gpus 2 MODEL.DEVICE
cpu`` run are tested too.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fastreid.utils import comm

import plugins  # noqa: F401
from plugins.data.samplers import IdentityBatchSampler, RandomBatchSampler
from tests.fixtures_model import IRRA_HEADS, ROOT, SHORT_RUN, build_model_from, caption_batch
from tests.test_train_net import TINY

WORLD = 2


def _clip_sdm():
    cfg, model = build_model_from(
        "configs/CUHKPEDES/clip_sdm.yml",
        "MODEL.HEADS.NUM_CLASSES",
        "3",
        "MODEL.RETRIEVAL.ID_WEIGHT",
        "1.0",
    )
    return model, caption_batch()


def _fmfa():
    # A-SDM + EFA + ID. IRRA's masked-token loss is off: it stays per process (a mean over
    # each process's masked tokens), equal to the global mean only for equal token counts.
    _, model = build_model_from(
        "configs/CUHKPEDES/fmfa.yml", *IRRA_HEADS, "MODEL.IRR.WEIGHT", "0.0"
    )
    return model, caption_batch()


def _corl():
    # The collaboration stage: IBM + ID + L_align + CRCL.
    from tests.test_corl import make_batch, model_in_stage

    model = model_in_stage(1)
    torch.manual_seed(0)
    return model, make_batch()


def _rsba():
    # Visible-infrared: ID + L_mse + ESFA + CSIA + CVSC, with the BNNeck on the gathered features.
    from tests.test_rsba import batch, build

    _, model = build()
    # Each half a paired two-modality PK batch (the sampler's layout): identities 0, 1 visible,
    # then infrared, for rank 0; identities 2, 3 for rank 1.
    order = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
    torch.manual_seed(0)  # CVSC draws its other views from the torch generator
    return model, {k: v[order] for k, v in batch().items()}


RECIPES = {"clip_sdm": _clip_sdm, "fmfa": _fmfa, "corl": _corl, "rsba": _rsba}


def make(recipe):
    """The recipe's model and batch in float64: the comparison then shows the gathered step
    equal to the one-process step up to rounding, not up to float32 noise through a deep net."""
    model, batch = RECIPES[recipe]()
    return model.double(), {
        k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in batch.items()
    }


def _half(batch, rank):
    size = len(batch["targets"]) // WORLD
    return {k: v[rank * size : (rank + 1) * size] for k, v in batch.items()}


def one_step(model, batch):
    """The total loss and every parameter's gradient of one training step.

    Image batch norms use their running statistics: in training each process normalises with
    its own mini-batch's (a documented limit; ``SyncBatchNorm`` runs on GPUs only)."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    losses = model(batch)
    total = sum(losses.values())
    total.backward()
    module = getattr(model, "module", model)
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    return total.detach(), {k: v.detach() for k, v in losses.items()}, grads


def _worker(rank, recipe, port, out):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=WORLD, rank=rank
    )
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(WORLD)))
    torch.set_num_threads(1)
    try:
        model, batch = make(recipe)
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        total, losses, grads = one_step(ddp, _half(batch, rank))
        # What training logs: the processes' mean total loss.
        mean_total = total.clone()
        dist.all_reduce(mean_total)
        mean_total /= WORLD
        if rank == 0:
            torch.save({"total": mean_total, "losses": losses, "grads": grads}, out)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_two_processes_equal_one_on_the_concatenated_batch(recipe, tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(recipe, _free_port(), str(out)), nprocs=WORLD, join=True)
    got = torch.load(out)
    model, batch = make(recipe)
    total, losses, grads = one_step(model, batch)
    assert torch.allclose(got["total"], total, rtol=1e-10, atol=1e-12), (got["total"], total)
    # Each process's copy of a gathered loss is the one-process value (every loss here is
    # batch-level or a per-sample mean over the gathered batch).
    for name, value in losses.items():
        assert torch.allclose(got["losses"][name], value, rtol=1e-10, atol=1e-12), name
    assert got["grads"].keys() == grads.keys()
    assert len(grads) > 10
    for name, g in grads.items():
        scale = g.abs().max().clamp_min(1e-12)
        diff = (got["grads"][name] - g).abs().max()
        assert diff <= 1e-9 * scale + 1e-12, f"{name}: {diff} vs gradient scale {scale}"


def test_gathered_loss_differs_from_a_per_process_loss():
    # The test above can fail: SDM over half a batch is not SDM over the whole batch.
    from plugins.modeling.losses import sdm_loss

    torch.manual_seed(0)
    v, t = torch.randn(4, 8), torch.randn(4, 8)
    pids = torch.tensor([0, 0, 1, 2])
    halves = (sdm_loss(v[:2], t[:2], pids[:2], 50.0) + sdm_loss(v[2:], t[2:], pids[2:], 50.0)) / 2
    assert not torch.allclose(halves, sdm_loss(v, t, pids, 50.0))


@pytest.mark.parametrize("kind", ["random", "identity"])
def test_samplers_shard_each_global_batch_without_overlap(kind):
    pids = [i // 4 for i in range(64)]  # 16 identities of 4 items

    def sampler(rank, world):
        if kind == "random":
            return RandomBatchSampler(len(pids), 8, seed=3, rank=rank, world_size=world)
        return IdentityBatchSampler(pids, 8, 2, seed=3, rank=rank, world_size=world)

    shards = [sampler(r, WORLD) for r in range(WORLD)]

    def as_lists(batches):
        return [[[int(i) for i in mini] for mini in b] for b in batches]

    batches = as_lists(shards[0].global_batches(0))
    assert batches == as_lists(shards[1].global_batches(0)) and len(batches) > 1
    seen = []
    for global_batch in batches:
        assert [len(m) for m in global_batch] == [4, 4]
        flat = [i for mini in global_batch for i in mini]
        assert len(set(flat)) == len(flat)  # no item twice in a global batch
        seen += flat
        if kind == "identity":  # whole identities per process: K = 2 images each
            for mini in global_batch:
                ids = [pids[i] for i in mini]
                assert all(ids.count(p) == 2 for p in ids)
    if kind == "random":  # an epoch covers every item once across the processes
        assert sorted(seen) == list(range(64))
    # Each process reads exactly its own mini-batches from the stream.
    for rank, shard in enumerate(shards):
        stream = iter(shard)
        got = [next(stream)[0] for _ in range(4 * len(batches))]
        assert got == [i for b in batches for i in b[rank]]


def two_process_run(tmp_path, out, *opts):
    """The command and environment of a two-process gloo training of the tiny CLIP + SDM on a
    CUHK-PEDES fixture written under ``tmp_path``, into ``out``."""
    from tests.fixtures_text import write_cuhkpedes

    root = tmp_path / "data"
    write_cuhkpedes(str(root))
    cmd = [
        sys.executable, str(ROOT / "tools/train_net.py"),
        "--config-file", str(ROOT / "configs/Demo/tipr_clip_sdm.yml"),
        "--num-gpus", "2",
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(out),
        *TINY, *opts,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", FASTREID_DATASETS=str(root))
    return cmd, env


@pytest.mark.timeout(600)
def test_train_net_with_two_cpu_processes(tmp_path):
    out = tmp_path / "run"
    cmd, env = two_process_run(tmp_path, out, *SHORT_RUN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert "R1" in json.dumps(results)
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    # Rank 1 logs to its own file: both processes trained.
    assert "World size: 2" in (out / "log.txt.rank1").read_text()


ITER_LINE = re.compile(r"epoch/iter: (\d+)/(\d+)")


def _stat(pid):
    """(parent pid, start time) of a live process, from /proc/<pid>/stat; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])  # fields 4 and 22 of proc(5)


def _children(pid):
    """{pid: start time} of the processes whose parent is ``pid``."""
    found = {}
    for entry in os.listdir("/proc"):
        stat = _stat(entry) if entry.isdigit() else None
        if stat is not None and stat[0] == pid:
            found[int(entry)] = stat[1]
    return found


def _kill_if_alive(processes):
    """SIGKILL each (pid, start time) that is still that process (not a reused pid)."""
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == started:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "signum, how",
    [(signal.SIGTERM, "kill"), (signal.SIGINT, "ctrl-c")],
    ids=["sigterm-to-the-launcher", "ctrl-c-in-a-terminal"],
)
def test_signal_to_a_multi_process_launcher_saves_before_it_exits(tmp_path, signum, how):
    """A container stop sends SIGTERM to the launcher, then SIGKILL to every process left the
    moment the launcher is gone; a terminal's Ctrl-C sends SIGINT to its foreground process
    group. Either way the checkpoint must exist when the launcher exits, with 128 + signal."""
    out = tmp_path / "run"
    cmd, env = two_process_run(
        tmp_path, out,
        "SOLVER.IMS_PER_BATCH", "4",
        "SOLVER.MAX_EPOCH", "500",  # never reached: the signal comes after the first step
        "TEST.EVAL_PERIOD", "500",
        "SOLVER.LOG_PERIOD", "1",
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as a shell's foreground job
    )  # fmt: skip
    lines, stepped = [], threading.Event()

    def drain():  # the workers share the pipe: read it to the end, whoever writes
        for line in proc.stdout:
            lines.append(line)
            if ITER_LINE.search(line):
                stepped.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    left = {}
    try:
        assert stepped.wait(480), "".join(lines)[-3000:]
        left = _children(proc.pid)
        if how == "kill":
            proc.send_signal(signum)
        else:
            os.killpg(proc.pid, signum)
        code = proc.wait(timeout=300)
        saved = (out / "model_interrupted.pth").is_file()
    finally:
        _kill_if_alive(left)  # what a container stop does once the launcher is gone
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=60)
    log = "".join(lines)
    assert code == 128 + signum, log[-3000:]
    assert saved, log[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_interrupted.pth"
    checkpoint = torch.load(out / "model_interrupted.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] >= 1 and {"model", "optimizer", "sampler"} <= set(checkpoint)
    assert "run the same command again with --resume" in log
    assert f"Received {signal.Signals(signum).name}: passed on to the 2 training processes" in log
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def _worker_that_fails_or_stops(local_rank, mode):
    if local_rank == 1 and mode == "fail":
        raise ValueError("rank 1 cannot read its data")
    if mode == "stop":
        from plugins.engine.checkpoint import TrainingInterrupted

        raise TrainingInterrupted(signal.SIGTERM, "stopped")
    time.sleep(600)  # rank 0 of a failing run: stopped by the launcher


def test_launcher_reports_a_failed_worker_and_a_stopped_run():
    from plugins.engine.checkpoint import TrainingInterrupted
    from plugins.engine.launch import run_workers

    start = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 cannot read its data"):
        run_workers(_worker_that_fails_or_stops, 2, ("fail",))
    assert time.monotonic() - start < 120  # the sleeping worker was stopped, not waited for
    # Workers stopped by a signal (nobody signalled the launcher): the run stops with 143.
    with pytest.raises(TrainingInterrupted) as stopped:
        run_workers(_worker_that_fails_or_stops, 2, ("stop",))
    assert stopped.value.exit_code == 143
