"""fast-reid's Bag-of-Tricks / AGW configs on the VI-ReID datasets, AGW's triplet loss against the
plugin's weighted regularised triplet, and tools/run_trials.py's bookkeeping (no training)."""

import glob
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

import plugins  # noqa: F401

# isort: split
from fastreid.layers.pooling import GeneralizedMeanPooling, GlobalAvgPool
from fastreid.modeling.losses import triplet_loss
from fastreid.modeling.meta_arch import build_model
from fastreid.utils.events import EventStorage

from plugins.engine import build_config
from plugins.modeling.losses import wrt_loss
from tools import run_trials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = {"SYSUMM01": "sysumm01", "RegDB": "regdb", "LLCM": "llcm"}
REAL = [os.path.join("configs", d, f"{m}_R50.yml") for d in DATASETS for m in ("bagtricks", "agw")]
DEMO = [os.path.join("configs", "Demo", f"{d}_{m}.yml") for d in ("regdb", "llcm") for m in ("bagtricks", "agw")]  # fmt: skip


def _cfg(path, opts=()):
    return build_config(os.path.join(ROOT, path), list(opts) + ["MODEL.DEVICE", "cpu"])


# ---------------------------------------------------------------------------------------------
# (a) the configs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", REAL + DEMO)
def test_vi_config_settings(path):
    cfg = _cfg(path)
    agw = "agw" in os.path.basename(path)
    demo = path in DEMO
    dataset = cfg.DATASETS.NAMES[0]
    assert tuple(cfg.DATASETS.NAMES) == tuple(cfg.DATASETS.TESTS) == (dataset,)
    assert dataset in DATASETS
    assert cfg.MODEL.META_ARCHITECTURE == "Baseline"
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    assert cfg.DATALOADER.SAMPLER_TRAIN == "ModalityIdentitySampler"
    # P identities x (K visible + K infrared)
    assert cfg.SOLVER.IMS_PER_BATCH % (2 * cfg.DATALOADER.NUM_INSTANCE) == 0
    assert cfg.SEED == 0
    # fast-reid's ImageNet statistics, not the plugin's CLIP default.
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert cfg.MODEL.PIXEL_STD == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])
    assert cfg.MODEL.BACKBONE.PRETRAIN_PATH == ""
    tri = cfg.MODEL.LOSSES.TRI
    assert tuple(cfg.MODEL.LOSSES.NAME) == ("CrossEntropyLoss", "TripletLoss")
    assert cfg.MODEL.LOSSES.CE.EPSILON == 0.1
    assert not tri.NORM_FEAT
    if agw:
        assert (tri.MARGIN, tri.HARD_MINING) == (0.0, False)
        assert cfg.MODEL.BACKBONE.WITH_NL
        assert cfg.MODEL.HEADS.POOL_LAYER == "GeneralizedMeanPooling"
    else:
        assert (tri.MARGIN, tri.HARD_MINING) == (0.3, True)
        assert not cfg.MODEL.BACKBONE.WITH_NL
        assert cfg.MODEL.HEADS.POOL_LAYER == "GlobalAvgPool"
    if demo:
        assert cfg.MODEL.BACKBONE.DEPTH == "18x" and not cfg.MODEL.BACKBONE.PRETRAIN
        assert cfg.MODEL.BACKBONE.FEAT_DIM == 512
        assert cfg.DATALOADER.NUM_WORKERS == 0 and cfg.DATALOADER.TEST_NUM_WORKERS == 0
        assert not cfg.SOLVER.AMP.ENABLED
        assert cfg.OUTPUT_DIR == f"output/demo/{os.path.splitext(os.path.basename(path))[0]}"
    else:
        assert cfg.MODEL.BACKBONE.DEPTH == "50x" and cfg.MODEL.BACKBONE.PRETRAIN
        assert list(cfg.INPUT.SIZE_TRAIN) == list(cfg.INPUT.SIZE_TEST) == [288, 144]
        name = os.path.splitext(os.path.basename(path))[0]
        assert cfg.OUTPUT_DIR == f"output/{DATASETS[dataset]}/{name}"


@pytest.mark.parametrize("path", REAL + DEMO)
def test_fastreid_configs_keep_fastreids_epoch_and_schedule(path):
    """fast-reid's Bag of Tricks / AGW train as fast-reid does (its published figures): an epoch
    of (visible + infrared images) / batch, per-iteration warm-up, STEPS after the warm-up."""
    cfg = _cfg(path)
    assert cfg.DATALOADER.VI_EPOCH == "images" and cfg.SOLVER.SCHED_UNIT == "iteration"
    if path in REAL:
        assert list(cfg.SOLVER.STEPS) == [40, 90] and cfg.SOLVER.WARMUP_ITERS == 2000
        assert cfg.SOLVER.MAX_EPOCH == 120


CLIP_VI = sorted(
    os.path.relpath(p, ROOT)
    for d in list(DATASETS) + ["Demo"]
    for m in ("clip4vireid", "rsba")
    for p in glob.glob(os.path.join(ROOT, "configs", d, f"*{m}*.yml"))
) + sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "SYSUMM01", "rsba_ablation", "*.yml"))
)


@pytest.mark.parametrize("path", CLIP_VI)
def test_clip_vi_configs_count_epochs_as_the_papers(path):
    """The paper-following configs (Base-CLIP-VIReID.yml): AGW's two-modality epoch, one lr per
    epoch with STEPS from the start, whole-epoch warm-ups, bias decay said explicitly."""
    cfg = _cfg(path)
    assert cfg.DATALOADER.VI_EPOCH == "sampler" and cfg.SOLVER.SCHED_UNIT == "epoch"
    assert cfg.SOLVER.WARMUP_ITERS == 0 and cfg.SOLVER.DELAY_EPOCHS == 0
    assert cfg.SOLVER.WEIGHT_DECAY_BIAS == cfg.SOLVER.WEIGHT_DECAY


@pytest.mark.parametrize("path", REAL)
def test_real_config_builds_with_a_local_imagenet_file(path, tmp_path):
    """PRETRAIN_PATH is how the ImageNet weights come in: a (partial) state dict is loaded."""
    conv1 = torch.full((64, 3, 7, 7), 0.125)
    weights = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": conv1}, weights)
    cfg = _cfg(path, ["MODEL.HEADS.NUM_CLASSES", "5", "MODEL.BACKBONE.PRETRAIN_PATH", str(weights)])
    model = build_model(cfg)
    assert torch.equal(model.backbone.conv1.weight, conv1)
    agw = cfg.MODEL.BACKBONE.WITH_NL
    # fast-reid's ResNet-50 non-local layout: the last 2 blocks of layer2, the last 3 of layer3.
    if agw:
        assert (len(model.backbone.NL_2), len(model.backbone.NL_3)) == (2, 3)
        assert (len(model.backbone.NL_1), len(model.backbone.NL_4)) == (0, 0)
    else:
        assert not hasattr(model.backbone, "NL_2")
    pool = model.heads.pool_layer
    assert isinstance(pool, GeneralizedMeanPooling if agw else GlobalAvgPool)
    assert model.loss_kwargs["tri"]["margin"] == (0.0 if agw else 0.3)
    assert model.loss_kwargs["tri"]["hard_mining"] == (not agw)


@pytest.mark.parametrize("path", DEMO)
def test_demo_model_trains_one_step_on_cpu(path):
    torch.manual_seed(0)
    cfg = _cfg(path, ["MODEL.HEADS.NUM_CLASSES", "4"])
    model = build_model(cfg)
    model.train()
    height, width = cfg.INPUT.SIZE_TRAIN
    batch = {
        "images": torch.rand(16, 3, height, width) * 255,
        "targets": torch.arange(4).repeat_interleave(4),
    }
    with EventStorage(0):  # fast-reid logs the classifier's accuracy there
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_triplet"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        feats = model({"images": batch["images"][:3]})
    assert feats.shape == (3, cfg.MODEL.BACKBONE.FEAT_DIM)


# ---------------------------------------------------------------------------------------------
# (b) AGW: fast-reid's triplet_loss(margin 0, hard_mining False) vs plugins' wrt_loss
# ---------------------------------------------------------------------------------------------


def loop_weighted_triplet(feats, pids, squared=False, fastreid_weights=False):
    """Plain-loop weighted regularised triplet, one anchor at a time.

    ``squared``: squared Euclidean distances (fast-reid's NORM_FEAT True uses
    ``2 - 2 cos = |x/|x| - y/|y||^2``). ``fastreid_weights``: fast-reid's
    ``softmax_weights`` exactly: the anchor's own distance is sqrt(1e-12) (not 0), the
    normaliser gets + 1e-6, and the negatives' exponent is shifted by 0 instead of its maximum.
    """
    n = feats.shape[0]
    losses = []
    for i in range(n):
        d = []
        for j in range(n):
            sq = float(((feats[i] - feats[j]) ** 2).sum())
            if i == j:
                sq = 1e-12 if (fastreid_weights and not squared) else 0.0
            d.append(sq if squared else math.sqrt(max(sq, 1e-12) if fastreid_weights else sq))
        pos = [d[j] for j in range(n) if pids[j] == pids[i]]
        neg = [d[j] for j in range(n) if pids[j] != pids[i]]
        eps = 1e-6 if fastreid_weights else 0.0
        shift_p = max(pos)
        shift_n = 0.0 if fastreid_weights else max(-v for v in neg)
        zp = sum(math.exp(v - shift_p) for v in pos) + eps
        zn = sum(math.exp(-v - shift_n) for v in neg) + eps
        far = sum(v * math.exp(v - shift_p) / zp for v in pos)
        near = sum(v * math.exp(-v - shift_n) / zn for v in neg)
        x = far - near
        losses.append(max(x, 0.0) + math.log1p(math.exp(-abs(x))))  # softplus
    return sum(losses) / n


def _batch(seed, p=8, k=4, dim=64, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(p * k, dim, generator=g, dtype=dtype) * scale
    pids = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]
    return feats, pids


def _fastreid_agw(feats, pids, norm_feat=False):
    return triplet_loss(feats, pids, margin=0.0, norm_feat=norm_feat, hard_mining=False)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("normalise", [True, False])
def test_fastreid_agw_triplet_equals_wrt_loss(seed, normalise):
    """Normalised features, or features at a small scale (distances of a few units): equal
    values and gradients. (fast-reid's own normalisation, NORM_FEAT True, is another loss:
    below.)"""
    feats, pids = _batch(seed, scale=1.0 if normalise else 0.1)
    if normalise:
        feats = F.normalize(feats, dim=1)
    a = feats.clone().requires_grad_(True)
    b = feats.clone().requires_grad_(True)
    ours, theirs = wrt_loss(a, pids), _fastreid_agw(b, pids)
    assert ours.item() == pytest.approx(loop_weighted_triplet(feats, pids.tolist()), abs=1e-9)
    assert theirs.item() == pytest.approx(ours.item(), abs=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_fastreid_agw_triplet_equals_wrt_loss_in_float32(seed):
    feats, pids = _batch(seed, dtype=torch.float32)
    feats = F.normalize(feats, dim=1)
    assert float(_fastreid_agw(feats, pids)) == pytest.approx(
        float(wrt_loss(feats, pids)), abs=1e-5
    )


@pytest.mark.parametrize("seed", range(3))
def test_fastreid_norm_feat_uses_squared_cosine_distance(seed):
    """NORM_FEAT True: fast-reid's distance is 2 - 2 cos (a squared distance), so it is not
    wrt_loss on normalised features; the configs keep NORM_FEAT False."""
    feats, pids = _batch(seed)
    theirs = float(_fastreid_agw(feats, pids, norm_feat=True))
    unit = F.normalize(feats, dim=1)
    ref = loop_weighted_triplet(unit, pids.tolist(), squared=True, fastreid_weights=True)
    assert theirs == pytest.approx(ref, abs=1e-6)
    assert abs(theirs - float(wrt_loss(unit, pids))) > 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_fastreid_agw_triplet_departs_from_wrt_at_large_distances(seed):
    """Raw features at unit scale (distances ~11): fast-reid's ``softmax_weights`` shifts the
    negatives' exponent by 0 and adds 1e-6 to the normaliser, so its negative weights no longer
    sum to 1. Its value is that formula exactly (plain loop), not wrt_loss."""
    feats, pids = _batch(seed)
    theirs = float(_fastreid_agw(feats, pids))
    ref = loop_weighted_triplet(feats, pids.tolist(), fastreid_weights=True)
    assert theirs == pytest.approx(ref, abs=1e-6)
    assert float(wrt_loss(feats, pids)) == pytest.approx(
        loop_weighted_triplet(feats, pids.tolist())
    )
    assert abs(theirs - float(wrt_loss(feats, pids))) > 1e-3


def test_fastreid_soft_margin_overflow_falls_back_to_margin_ranking():
    """float32 features far apart: fast-reid's soft margin overflows to inf and it returns
    ``margin_ranking_loss(d_n, d_p, margin=0.3)``; wrt_loss's softplus stays finite."""
    feats, pids = _batch(0, p=4, k=4, dim=32, scale=30.0, dtype=torch.float32)
    theirs = _fastreid_agw(feats, pids)
    d = torch.cdist(feats.double(), feats.double())
    same = pids[:, None] == pids[None, :]
    # At these distances fast-reid's negative weights vanish (d_n ~ 0) and its positive term is
    # the softmax-weighted positive distance.
    w = torch.softmax(d.masked_fill(~same, float("-inf")), dim=1)
    d_p = (w * d).sum(1)
    assert float(theirs) == pytest.approx(float(torch.clamp(d_p + 0.3, min=0).mean()), rel=1e-4)
    ours = wrt_loss(feats, pids)
    assert torch.isfinite(ours) and abs(float(ours) - float(theirs)) > 1.0


# ---------------------------------------------------------------------------------------------
# (c) tools/run_trials.py
# ---------------------------------------------------------------------------------------------


def _results(v2t_r1, v2t_map, t2v_r1, t2v_map, minp=1.0):
    modes = {"v2t": (v2t_r1, v2t_map), "t2v": (t2v_r1, t2v_map)}
    res = {"R1": v2t_r1, "mAP": v2t_map, "mINP": minp}
    for mode, (r1, m) in modes.items():
        res.update({f"{mode}/R1": r1, f"{mode}/R10": r1 + 10, f"{mode}/mAP": m})
        res.update({f"{mode}/mINP": minp, f"{mode}/R1_std": 0.0})
    res["metric"] = v2t_r1
    return {"RegDB": res}


def _finish(out_dir, results):
    """A finished trial: model_final.pth, then (later) results.json."""
    os.makedirs(out_dir, exist_ok=True)
    final = os.path.join(out_dir, "model_final.pth")
    open(final, "w").close()
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f)
    os.utime(final, (1000, 1000))
    os.utime(path, (2000, 2000))


def test_summary_mean_and_population_std(tmp_path):
    per_trial = {
        1: _results(50.0, 40.0, 48.0, 39.0)["RegDB"],
        2: _results(60.0, 50.0, 52.0, 41.0)["RegDB"],
        4: _results(70.0, 45.0, 56.0, 43.0)["RegDB"],
    }
    s = run_trials.summarize(per_trial)
    assert s["trials"] == [1, 2, 4]
    assert s["mean"]["v2t/R1"] == pytest.approx(60.0)
    assert s["std"]["v2t/R1"] == pytest.approx(math.sqrt(200 / 3))  # population: /3
    assert s["mean"]["t2v/mAP"] == pytest.approx(41.0)
    assert s["std"]["t2v/mAP"] == pytest.approx(math.sqrt(8 / 3))
    assert s["mean"]["v2t/R10"] == pytest.approx(70.0)
    assert "v2t/R1_std" not in s["mean"] and "R1" not in s["mean"]
    table = run_trials.format_table(s)
    lines = table.splitlines()
    assert lines[0] == "| trial | v2t R1 | v2t mAP | v2t mINP | t2v R1 | t2v mAP | t2v mINP |"
    assert lines[2] == "| 1 | 50.00 | 40.00 | 1.00 | 48.00 | 39.00 | 1.00 |"
    assert lines[-1].startswith("| mean +- std | 60.00 +- 8.16 | 45.00 +- 4.08 |")
    assert len(lines) == 2 + 3 + 1


def test_read_results_takes_the_regdb_entry(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(1.0, 2.0, 3.0, 4.0)))
    assert run_trials.read_results(str(path))["t2v/R1"] == 3.0
    path.write_text(json.dumps({"LLCM": {"R1": 1.0}, "SYSUMM01": {"R1": 2.0}}))
    with pytest.raises(KeyError, match="RegDB"):
        run_trials.read_results(str(path))


def test_trial_state(tmp_path):
    out = str(tmp_path / "trial1")
    assert run_trials.trial_state(out) == "train"
    os.makedirs(out)
    # An evaluation during training writes results.json long before the end.
    (tmp_path / "trial1" / "results.json").write_text(json.dumps(_results(1, 1, 1, 1)))
    (tmp_path / "trial1" / "last_checkpoint").write_text("model_0029.pth")
    assert run_trials.trial_state(out) == "resume"
    final = tmp_path / "trial1" / "model_final.pth"
    final.write_text("")
    os.utime(tmp_path / "trial1" / "results.json", (1000, 1000))
    os.utime(final, (2000, 2000))
    assert run_trials.trial_state(out) == "evaluate"  # the final evaluation did not happen
    os.utime(tmp_path / "trial1" / "results.json", (3000, 3000))
    assert run_trials.trial_state(out) == "done"


def test_trial_state_of_a_multi_stage_run(tmp_path):
    out = tmp_path / "trial1"
    for stage in ("tsg", "ife"):
        (out / stage).mkdir(parents=True)
        (out / stage / "stage.json").write_text("{}")
    (out / "tsg" / "model_final.pth").write_text("")
    os.utime(out / "tsg" / "model_final.pth", (1500, 1500))
    (out / "ife" / "last_checkpoint").write_text("model_0009.pth")
    assert run_trials.trial_state(str(out)) == "resume"  # inside the interrupted stage
    (out / "ife" / "last_checkpoint").unlink()
    assert run_trials.trial_state(str(out)) == "train"  # finished stages are reused
    (out / "ife" / "model_final.pth").write_text("")
    os.utime(out / "ife" / "model_final.pth", (2000, 2000))
    (out / "results.json").write_text(json.dumps(_results(1, 1, 1, 1)))
    os.utime(out / "results.json", (1000, 1000))
    assert run_trials.trial_state(str(out)) == "train"  # published before the last stage ended
    os.utime(out / "results.json", (3000, 3000))
    assert run_trials.trial_state(str(out)) == "done"


def test_split_trials_keeps_overrides():
    trials, rest = run_trials.split_trials(
        ["--config-file", "c.yml", "--trials", "1", "3", "SOLVER.MAX_EPOCH", "2"]
    )
    assert trials == [1, 3]
    assert rest == ["--config-file", "c.yml", "SOLVER.MAX_EPOCH", "2"]
    args = run_trials.parse_args(["--config-file", "c.yml", "SEED", "1", "--trials", "2"])
    assert args.trials == [2] and args.opts == ["SEED", "1"]
    assert run_trials.parse_args(["--config-file", "c.yml"]).trials == list(range(1, 11))
    for bad in (["--trials", "11"], ["DATASETS.REGDB_TRIAL", "2"], ["SEED"], ["--resume"]):
        with pytest.raises(SystemExit):
            run_trials.parse_args(["--config-file", "c.yml"] + bad)


class FakeTrainNet:
    """Stands in for the tools/train_net.py subprocess: records commands, finishes trials."""

    def __init__(self, results, fail=()):
        self.results = results
        self.fail = set(fail)
        self.calls = []

    def __call__(self, cmd, log_path):
        trial = int(cmd[cmd.index("DATASETS.REGDB_TRIAL") + 1])
        out_dir = cmd[cmd.index("OUTPUT_DIR") + 1]
        self.calls.append((trial, cmd))
        assert os.path.dirname(log_path) == out_dir
        if trial in self.fail:
            return 130
        _finish(out_dir, self.results[trial])
        return 0


def test_run_trials_resumes_and_reads_back(tmp_path, capsys):
    base = tmp_path / "regdb"
    results = {t: _results(10.0 * t, 5.0 * t, 9.0 * t, 4.0 * t) for t in range(1, 5)}
    _finish(str(base / "trial1"), results[1])  # finished before: read back, not re-run
    (base / "trial2").mkdir()
    (base / "trial2" / "last_checkpoint").write_text("model_interrupted.pth")  # interrupted
    (base / "trial3").mkdir()
    (base / "trial3" / "model_final.pth").write_text("")  # final evaluation failed
    fake = FakeTrainNet(results)
    config = os.path.join(ROOT, "configs", "RegDB", "agw_R50.yml")
    argv = ["--config-file", config, "--trials", "1", "2", "3", "4"]
    argv += ["SOLVER.MAX_EPOCH", "2", "OUTPUT_DIR", str(base)]
    assert run_trials.main(argv, runner=fake) == 0

    calls = dict(fake.calls)
    assert sorted(calls) == [2, 3, 4]
    assert "--resume" in calls[2] and "--eval-only" not in calls[2]
    assert "--eval-only" in calls[3]
    weights = calls[3][calls[3].index("MODEL.WEIGHTS") + 1]
    assert weights == str(base / "trial3" / "model_final.pth")
    assert "--resume" not in calls[4] and "--eval-only" not in calls[4]
    for t, cmd in calls.items():
        assert cmd[:4] == [run_trials.sys.executable, run_trials.TRAIN_NET, "--config-file", config]
        assert cmd[-4:] == ["DATASETS.REGDB_TRIAL", str(t), "OUTPUT_DIR", str(base / f"trial{t}")]
        assert cmd.count("OUTPUT_DIR") == 1  # the base folder is not passed on
        assert "SOLVER.MAX_EPOCH" in cmd

    summary = json.loads((base / "summary.json").read_text())
    assert summary["trials"] == [1, 2, 3, 4]
    assert summary["mean"]["v2t/R1"] == pytest.approx(25.0)
    assert summary["std"]["v2t/R1"] == pytest.approx(math.sqrt(125.0))
    out = capsys.readouterr().out
    assert "| 4 | 40.00 | 20.00 | 1.00 | 36.00 | 16.00 | 1.00 |" in out
    assert "| mean +- std | 25.00 +- 11.18 |" in out

    # Everything finished: a second run trains nothing.
    again = FakeTrainNet(results)
    assert run_trials.main(argv, runner=again) == 0
    assert again.calls == []


def test_run_trials_stops_at_a_failed_trial(tmp_path, capsys):
    base = tmp_path / "regdb"
    results = {t: _results(1.0, 1.0, 1.0, 1.0) for t in (1, 2, 3)}
    fake = FakeTrainNet(results, fail={2})
    config = os.path.join(ROOT, "configs", "RegDB", "bagtricks_R50.yml")
    argv = ["--config-file", config, "--trials", "1", "2", "3", "OUTPUT_DIR", str(base)]
    assert run_trials.main(argv, runner=fake) == 130
    assert [t for t, _ in fake.calls] == [1, 2]
    assert "trial 2 exited with status 130" in capsys.readouterr().err
    assert not (base / "summary.json").exists()


def test_run_trials_refuses_a_non_regdb_config():
    config = os.path.join(ROOT, "configs", "LLCM", "agw_R50.yml")
    with pytest.raises(SystemExit, match="RegDB"):
        run_trials.main(["--config-file", config], runner=FakeTrainNet({}))
