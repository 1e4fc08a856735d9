"""Training and evaluation that lose nothing and are never silently wrong.

``--eval-only`` builds no training-only parts; checkpoints of another model are errors; the final
checkpoint is written before the final evaluation; SIGINT saves a checkpoint that ``--resume``
continues; checkpoints are written atomically; one run at a time per OUTPUT_DIR; flags may follow
the KEY VALUE overrides. End-to-end cases run ``tools/train_net.py`` on tiny fixtures.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import traceback

import pytest
import torch
from torch import nn

from plugins.engine import plugin_argument_parser
from plugins.engine.checkpoint import Checkpointer, CheckpointMismatchError, NotACheckpointError
from plugins.engine.defaults import OutputDirInUse, OutputDirLock
from tests.fixtures_text import write_cuhkpedes
from tests.test_train_net import ROOT, TINY, TRAIN_NET, final_results, train_net

ITER_LINE = re.compile(r"epoch/iter: (\d+)/(\d+)")


def run_train_net(config, data_root, *opts, eval_only=False, timeout=600):
    """tools/train_net.py whatever its exit status: (returncode, combined output)."""
    cmd = [sys.executable, TRAIN_NET, "--config-file", os.path.join(ROOT, config)]
    cmd += (["--eval-only"] if eval_only else []) + TINY + list(opts)
    env = dict(os.environ, FASTREID_DATASETS=data_root, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


# tools/train_net.py in a process whose trainer is altered first (a broken evaluation, a pause).
_DRIVER = """
import os, runpy, sys, time
sys.path.insert(0, {root!r})
import plugins  # noqa: F401
from plugins.engine.trainer import PluginTrainer

mode, hold = {mode!r}, {hold!r}
if mode == "broken_eval":
    def broken(cls, cfg, model):
        raise RuntimeError("the test set cannot be read")
    PluginTrainer.test = classmethod(broken)
elif mode == "hold":
    run_step = PluginTrainer.run_step
    def held(self):
        while self.iter >= 1 and os.path.exists(hold):
            time.sleep(0.05)
        run_step(self)
    PluginTrainer.run_step = held
sys.argv = {argv!r}
runpy.run_path({train_net!r}, run_name="__main__")
"""


def driver_cmd(mode, config, *opts, hold=""):
    argv = [TRAIN_NET, "--config-file", os.path.join(ROOT, config), *TINY, *opts]
    code = _DRIVER.format(root=ROOT, mode=mode, hold=hold, argv=argv, train_net=TRAIN_NET)
    return [sys.executable, "-c", code]


def model_params(output):
    """The parameter count (millions) of the 'Model X: N M parameters' line."""
    return float(re.search(r"Model \w+: ([\d.]+)M parameters", output).group(1))


@pytest.fixture(scope="module")
def cuhk(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuhk")
    write_cuhkpedes(str(root))
    return str(root)


# Configs with training-only parts: IRRA's identity classifier; MGANet's reconstruction
# transformers and MLM head (with an ID loss too, so eval-only must not need NUM_CLASSES).
TRAINING_HEAD_CONFIGS = {
    "cuhk_clip_sdm": ("configs/CUHKPEDES/clip_sdm.yml", "cuhk", "CUHKPEDES", []),
    "mganet": (
        "configs/Demo/mganet.yml",
        "rgbt",
        "RGBTPEDES",
        ["MODEL.RETRIEVAL.ID_WEIGHT", "1.0"],
    ),
}


@pytest.fixture(scope="module")
def trained(cuhk, rgbt, tmp_path_factory):
    """name -> (output dir, training log) for every TRAINING_HEAD_CONFIGS entry (2 epochs)."""
    data = {"cuhk": cuhk, "rgbt": rgbt}
    runs = {}
    for name, (config, data_key, _, extra) in TRAINING_HEAD_CONFIGS.items():
        out = str(tmp_path_factory.mktemp(name) / "train")
        log = train_net(
            config,
            data[data_key],
            "SOLVER.IMS_PER_BATCH", "4",
            "DATALOADER.NUM_INSTANCE", "2",
            "SOLVER.MAX_EPOCH", "2",
            "TEST.EVAL_PERIOD", "2",
            "OUTPUT_DIR", out,
            *extra,
        )  # fmt: skip
        runs[name] = (out, log)
    return runs


@pytest.mark.parametrize("name", sorted(TRAINING_HEAD_CONFIGS))
def test_eval_only_builds_no_training_heads_and_reproduces_training(
    name, trained, cuhk, rgbt, tmp_path
):
    config, data_key, dataset, extra = TRAINING_HEAD_CONFIGS[name]
    out, train_log = trained[name]
    weights = os.path.join(out, "model_final.pth")
    state = torch.load(weights, map_location="cpu")["model"]
    assert any(k.startswith("classifier.") for k in state)  # the ID loss trained a classifier
    eval_dir = tmp_path / "eval"
    # A CLIP file that does not exist: evaluation must not try to load it.
    code, eval_log = run_train_net(
        config,
        {"cuhk": cuhk, "rgbt": rgbt}[data_key],
        "MODEL.WEIGHTS", weights,
        "OUTPUT_DIR", str(eval_dir),
        "MODEL.CLIP.WEIGHTS", "/nonexistent/clip.pt",
        *extra,
        eval_only=True,
    )  # fmt: skip
    assert code == 0, eval_log[-5000:]
    assert final_results(eval_log, dataset) == final_results(train_log, dataset)
    assert "Starting training" not in eval_log
    # The classifier (and MGANet's heads) are not built, and their entries are expected extras.
    left_over = re.search(r"Not loading \d+ training-only entries \((.*)\)", eval_log).group(1)
    assert "classifier." in left_over
    if name == "mganet":
        assert "heads.frt." in left_over and "heads.mlm." in left_over
        assert model_params(eval_log) < model_params(train_log)
    assert (
        "MODEL.CLIP.WEIGHTS (/nonexistent/clip.pt) is not used: the model comes from " in eval_log
    )
    saved = (eval_dir / "config.yaml").read_text()
    assert re.search(r"PRETRAIN: false", saved) and re.search(r"WEIGHTS: ''", saved)


def rejected_eval(config, data_root, weights, output_dir, *opts):
    """An ``--eval-only`` run of ``config`` from ``weights`` that must fail: its output."""
    code, log = run_train_net(
        config,
        data_root,
        *opts,
        "MODEL.WEIGHTS", str(weights),
        "OUTPUT_DIR", str(output_dir),
        eval_only=True,
    )  # fmt: skip
    assert code != 0, log[-3000:]
    return log


def test_eval_only_rejects_checkpoints_of_other_models(trained, cuhk, rgbt, tmp_path):
    clip_sdm = os.path.join(trained["cuhk_clip_sdm"][0], "model_final.pth")  # tiny-vit

    # tiny-vit weights into a tiny-rn model.
    rn = ["MODEL.CLIP.NAME", "tiny-rn"]
    log = rejected_eval("configs/CUHKPEDES/clip_sdm.yml", cuhk, clip_sdm, tmp_path / "rn", *rn)
    assert f"MODEL.WEIGHTS {clip_sdm} does not fit the CLIPRetrieval model" in log
    assert "missing from the checkpoint" in log and "in the checkpoint but not in the model" in log
    assert "shapes differ" in log and "image_encoder.visual.conv1.weight" in log
    assert "Evaluation results" not in log

    # A CLIPRetrieval checkpoint into MGANet (same CLIP, same context length): ATF is missing.
    context = ["MODEL.CLIP.CONTEXT_LENGTH", "77", "INPUT.TEXT.CONTEXT_LENGTH", "77"]
    log = rejected_eval("configs/Demo/mganet.yml", rgbt, clip_sdm, tmp_path / "mganet", *context)
    assert "does not fit the MGANet model" in log
    assert re.search(r"missing from the checkpoint \(\d+\): fusion\.", log)
    assert "shapes differ" not in log and "Evaluation results" not in log


def test_text_file_as_model_weights_is_named(rgbt, tmp_path):
    weights = tmp_path / "weights.txt"
    weights.write_text("not a checkpoint\n")
    log = rejected_eval("configs/Demo/clip_sdm_add.yml", rgbt, weights, tmp_path / "out")
    assert f"MODEL.WEIGHTS {weights} is not a checkpoint written by torch.save (" in log


def test_final_checkpoint_is_written_before_the_final_evaluation(rgbt, tmp_path):
    out = tmp_path / "out"
    cmd = driver_cmd(
        "broken_eval",
        "configs/Demo/clip_sdm_add.yml",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_EPOCH", "2",
        "TEST.EVAL_PERIOD", "2",
        "OUTPUT_DIR", str(out),
    )  # fmt: skip
    env = dict(os.environ, FASTREID_DATASETS=rgbt, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "the test set cannot be read" in log
    final = out / "model_final.pth"
    assert final.is_file(), log[-3000:]
    checkpoint = torch.load(final, map_location="cpu")
    assert checkpoint["epoch"] == 1 and checkpoint["iteration"] == 6  # 6 captions / 2 x 2 epochs
    assert f"--eval-only MODEL.WEIGHTS {final}" in log


def _read_until_iteration(proc, lines):
    """Read the child's output until its first training iteration is logged."""
    for line in proc.stdout:
        lines.append(line)
        if ITER_LINE.search(line):
            return
    raise AssertionError("training ended before logging an iteration:\n" + "".join(lines)[-3000:])


def test_sigint_saves_a_checkpoint_that_resume_continues_and_the_output_dir_is_locked(
    rgbt, trained, tmp_path
):
    out = tmp_path / "out"
    hold = tmp_path / "hold"
    hold.write_text("")
    # 6 captions / batch 2 = 3 iterations per epoch, 4 epochs = 12 iterations.
    opts = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_EPOCH", "4", "TEST.EVAL_PERIOD", "4"]
    opts += ["SOLVER.LOG_PERIOD", "1", "OUTPUT_DIR", str(out)]
    env = dict(os.environ, FASTREID_DATASETS=rgbt, HF_HUB_OFFLINE="1")
    cmd = driver_cmd("hold", "configs/Demo/clip_sdm_add.yml", *opts, hold=str(hold))
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        _read_until_iteration(proc, lines)  # iteration 0 done; iteration 1 waits for `hold`

        # A second run into the same folder stops at once, naming the folder and the holder.
        for extra, eval_only in (
            ([], False),
            (["MODEL.WEIGHTS", os.path.join(trained["mganet"][0], "model_final.pth")], True),
        ):
            code, log = run_train_net(
                "configs/Demo/clip_sdm_add.yml", rgbt, *opts, *extra, eval_only=eval_only
            )
            assert code != 0
            assert f"OUTPUT_DIR {out} is in use by another run (pid {proc.pid}" in log
            assert "Starting training" not in log and "Evaluation results" not in log

        proc.send_signal(signal.SIGINT)
        hold.unlink()
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGINT, log[-3000:]
    assert "run the same command again with --resume" in log
    checkpoint = torch.load(out / "model_interrupted.pth", map_location="cpu")
    assert (out / "last_checkpoint").read_text() == "model_interrupted.pth"
    iteration = checkpoint["iteration"]
    assert 1 <= iteration < 12
    assert {"model", "optimizer", "sampler", "epoch"} <= set(checkpoint)
    assert not (out / "model_final.pth").exists()
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]

    # Resume; the CLIP file named here does not exist: resuming must not load it.
    resumed = train_net(
        "configs/Demo/clip_sdm_add.yml",
        rgbt,
        *opts,
        "MODEL.BACKBONE.PRETRAIN", "True",
        "MODEL.CLIP.WEIGHTS", "/nonexistent/clip.pt",
        "--resume",  # after the overrides
    )  # fmt: skip
    assert f"Starting training from epoch {iteration // 3}, iteration {iteration} of 12" in resumed
    assert "MODEL.CLIP.WEIGHTS (/nonexistent/clip.pt) is not used" in resumed
    steps = [int(m.group(2)) for m in ITER_LINE.finditer(resumed)]
    assert steps[0] == iteration and steps[-1] == 11
    # Interrupted + resumed equals uninterrupted, to the bit (the run is seeded).
    reference = train_net(
        "configs/Demo/clip_sdm_add.yml", rgbt, *opts, "OUTPUT_DIR", str(tmp_path / "reference")
    )
    assert final_results(resumed, "RGBTPEDES") == final_results(reference, "RGBTPEDES")
    state = torch.load(out / "model_final.pth", map_location="cpu")["model"]
    expected = torch.load(tmp_path / "reference" / "model_final.pth", map_location="cpu")["model"]
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)


def test_output_dir_lock_blocks_a_live_holder_only(tmp_path):
    holder_code = (
        "import sys; from plugins.engine.defaults import OutputDirLock; "
        f"lock = OutputDirLock({str(tmp_path)!r}).__enter__(); print('held', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirInUse, match=rf"in use by another run \(pid {holder.pid},"):
            OutputDirLock(str(tmp_path)).__enter__()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its pid is still in the file, the lock is gone.
    (tmp_path / ".lock").write_text(f"{holder.pid}\n")
    with OutputDirLock(str(tmp_path)):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(OutputDirInUse, match=rf"pid {os.getpid()}"):
            OutputDirLock(str(tmp_path)).__enter__()
    with OutputDirLock(str(tmp_path)):  # released at the end of the first
        pass


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpointer = Checkpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_0000", epoch=0)
    good = (tmp_path / "model_0000.pth").read_bytes()

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with torch.no_grad():
        model.weight.add_(1.0)
    for name in ("model_0000", "model_0001"):
        with pytest.raises(OSError, match="No space left"):
            checkpointer.save(name, epoch=1)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000.pth"]
    assert (tmp_path / "model_0000.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000.pth"
    assert torch.load(tmp_path / "model_0000.pth")["epoch"] == 0


class _DiskFills:
    """A file that takes ``room`` bytes, then fails as a full disk does (OSError ENOSPC)."""

    def __init__(self, f, room):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture(params=["full-writer", "tmpfs"])
def full_disk(request, tmp_path, monkeypatch):
    """A folder where a checkpoint does not fit: files that fail with ENOSPC after 64 KB, or a
    1 MB tmpfs (needs the right to mount; skipped without it)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "full-writer":
        fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda *a, **k: _DiskFills(fdopen(*a, **k), 2**16))
        yield folder
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_disk_full_during_a_checkpoint_save_ends_with_no_space_left(full_disk):
    model = nn.Linear(1000, 500)  # 2 MB of weights
    checkpointer = Checkpointer(model, str(full_disk))
    with pytest.raises(OSError) as caught:
        checkpointer.save("model_final", epoch=0)
    assert caught.value.errno == errno.ENOSPC
    # The last line of the traceback a training prints says what happened and what to do.
    last = traceback.format_exception(caught.value)[-1].strip()
    assert "No space left on device" in last and "unexpected pos" not in last, last
    assert str(full_disk / "model_final.pth") in last and "free" in last, last
    assert os.listdir(full_disk) == []  # neither the checkpoint nor its temporary file


class _WithHead(nn.Module):
    training_only_prefixes = ("head.",)

    def __init__(self, width=4, head=True):
        super().__init__()
        self.body = nn.Linear(3, width)
        if head:
            self.head = nn.Linear(width, 5)


def test_strict_loading_for_resume_and_evaluation(tmp_path):
    Checkpointer(_WithHead(), str(tmp_path)).save("model_final", epoch=0, iteration=7)
    path = str(tmp_path / "model_final.pth")

    # Evaluation: the missing head is expected, everything else must match.
    evaluated = _WithHead(head=False)
    Checkpointer(evaluated).load(path, strict=True, evaluation=True)
    saved = torch.load(path)["model"]
    assert torch.equal(evaluated.body.weight, saved["body.weight"])
    with pytest.raises(CheckpointMismatchError, match=r"shapes differ \(2\): body.weight"):
        Checkpointer(_WithHead(width=6, head=False)).load(path, strict=True, evaluation=True)

    # Resume: every entry must match, training-only ones included.
    resumer = Checkpointer(_WithHead(head=False), str(tmp_path))
    with pytest.raises(
        CheckpointMismatchError, match=r"not in the model \(2\): head.bias, head.weight"
    ):
        resumer.resume_or_load("", resume=True)
    resumer = Checkpointer(_WithHead(), str(tmp_path))
    resumer.resume_or_load("", resume=True)
    assert resumer.resumed_state == {"path": path, "epoch": 0, "iteration": 7}

    # Initialising a new training from other weights stays lenient.
    Checkpointer(_WithHead(width=6)).resume_or_load(path, resume=False)

    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(NotACheckpointError, match="is not a checkpoint written by torch.save"):
        Checkpointer(_WithHead()).load(str(tmp_path / "notes.txt"))


def test_flags_may_follow_the_overrides(capsys):
    parser = plugin_argument_parser()
    args = parser.parse_args(["--config-file", "c.yml", "OUTPUT_DIR", "o", "--resume"])
    assert args.resume and not args.eval_only and args.opts == ["OUTPUT_DIR", "o"]
    args = parser.parse_args(["SEED", "-1", "--eval-only", "MODEL.WEIGHTS", "m.pth"])
    assert args.eval_only and args.opts == ["SEED", "-1", "MODEL.WEIGHTS", "m.pth"]
    for argv, message in (
        (["OUTPUT_DIR", "o", "--num-gpus", "2"], "--num-gpus comes after the KEY VALUE"),
        (["OUTPUT_DIR", "o", "SEED"], "a KEY lacks its VALUE"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err
