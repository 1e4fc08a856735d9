"""AGWTwoStream through ``tools/train_net.py``: every VI-ReID config builds, the Demo variant
trains on a synthetic RegDB set and ``--eval-only`` reproduces its metrics."""

import json

import pytest
import torch

from plugins.engine import build_config
from plugins.synthetic import write_llcm, write_regdb, write_sysumm01
from tests.test_train_net import final_results, train_net

CONFIGS = (
    "configs/SYSUMM01/agw_two_stream.yml",
    "configs/RegDB/agw_two_stream.yml",
    "configs/LLCM/agw_two_stream.yml",
    "configs/SYSUMM01/agw_two_stream_base.yml",
    "configs/RegDB/agw_two_stream_base.yml",
    "configs/LLCM/agw_two_stream_base.yml",
    "configs/Demo/regdb_agw_two_stream.yml",
    "configs/Demo/llcm_agw_two_stream.yml",
)


@pytest.mark.parametrize("config", CONFIGS)
def test_configs_build_agws_network_and_recipe(config):
    import torch
    from fastreid.modeling import build_model

    cfg = build_config(config, ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "3"])
    model = build_model(cfg)
    assert type(model).__name__ == "AGWTwoStream"
    shared = model.backbone.shared
    base = config.endswith("_base.yml")  # train.py --method base
    if base:
        assert not hasattr(shared, "NL_2") and not hasattr(shared, "NL_3")
        assert isinstance(model.pool[0], torch.nn.AdaptiveAvgPool2d)
        assert (model.triplet_name, cfg.MODEL.AGW.TRIPLET_MARGIN) == ("loss_triplet", 0.3)
    else:
        assert model.triplet_name == "loss_wrt"
    if cfg.MODEL.BACKBONE.DEPTH == "50x":
        if not base:
            assert (len(shared.NL_2), len(shared.NL_3)) == (2, 3)
            assert shared.NL_2[0].inter_channels == 1  # AGW's reduc_ratio // reduc_ratio
        # AGW's recipe
        s = cfg.SOLVER
        assert (s.OPT, s.BASE_LR * s.HEADS_LR_FACTOR, s.MAX_EPOCH) == ("SGD", 0.1, 81)
        assert (list(s.STEPS), s.WARMUP_EPOCHS, s.WARMUP_METHOD) == ([20, 50], 10, "agw")
        assert (s.IMS_PER_BATCH, cfg.DATALOADER.NUM_INSTANCE) == (64, 4)  # P 8 x (K 4 + K 4)
    assert cfg.DATALOADER.VI_EPOCH == "sampler"
    assert cfg.MODEL.AGW.WRT_FORM == "code"
    assert model.backbone.visible.maxpool.padding == 1
    model.eval()
    with torch.no_grad():
        x = torch.rand(2, 3, 64, 32) * 255
        out = model({"images": x, "modalities": torch.tensor([0, 1])})
    assert out.shape == (2, cfg.MODEL.BACKBONE.FEAT_DIM)


DATASETS = {
    "RegDB": (write_regdb, {"images_per_id": 4}, ("v2t", "t2v")),
    "LLCM": (write_llcm, {}, ("ir2vis", "vis2ir")),
    "SYSUMM01": (write_sysumm01, {}, ("all_single", "indoor_single")),
}


# AGW's train.py --method base, as configs/*/agw_two_stream_base.yml set it
BASE_METHOD = ("MODEL.BACKBONE.WITH_NL", "False", "MODEL.AGW.POOL", "avg")
BASE_METHOD += ("MODEL.AGW.TRIPLET", "hard")


@pytest.mark.parametrize(
    "name, method", [(name, "agw") for name in sorted(DATASETS)] + [("RegDB", "base")]
)
def test_demo_trains_and_eval_only_reproduces(name, method, tmp_path):
    writer, options, modes = DATASETS[name]
    data = tmp_path / "data"
    writer(str(data), 12, seed=0, overwrite=True, **options)
    config = "configs/Demo/regdb_agw_two_stream.yml"
    short = [
        "MODEL.DEVICE", "cpu", "DATASETS.NAMES", f"('{name}',)", "DATASETS.TESTS", f"('{name}',)",
        "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.STEPS", "[1]",
        "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2",
        "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2", "TEST.VI_TRIALS", "2",
        "SOLVER.LOG_PERIOD", "1",
    ]  # fmt: skip
    short += list(BASE_METHOD) if method == "base" else []
    out = tmp_path / "train"
    log = train_net(config, str(data), *short, "OUTPUT_DIR", str(out))
    assert ("loss_triplet" if method == "base" else "loss_wrt") in log and "loss_id" in log
    trained = json.loads((out / "results.json").read_text())[name]
    for mode in modes:
        assert {f"{mode}/R1", f"{mode}/mAP"} <= set(trained) and f"| {mode} " in log
    # the weights moved: the stems differ from each other after training from one copy
    state = torch.load(out / "model_final.pth", weights_only=True)["model"]
    vis, ir = (state[f"backbone.{s}.conv1.weight"] for s in ("visible", "infrared"))
    assert not torch.equal(vis, ir)
    evaluated = train_net(
        config, str(data), *short,
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"),
        eval_only=True,
    )  # fmt: skip
    assert final_results(evaluated, name) == final_results(log, name)


def test_optimizer_and_schedule_are_agws():
    """AGW's adjust_learning_rate: lr (e + 1) / 10 for e < 10, lr until 20, x0.1 until 50, x0.01
    after; the BNNeck and classifier at lr = 0.1, everything else at 0.1 x lr."""
    from fastreid.modeling import build_model

    from plugins.engine.lr_schedule import build_epoch_lr_scheduler
    from plugins.engine.optimizer import build_plugin_optimizer

    cfg = build_config(
        "configs/Demo/regdb_agw_two_stream.yml",
        ["MODEL.HEADS.NUM_CLASSES", "3", "SOLVER.MAX_EPOCH", "81", "SOLVER.STEPS", "[20, 50]",
         "SOLVER.WARMUP_EPOCHS", "10"],
    )  # fmt: skip
    model = build_model(cfg)
    optimizer, _ = build_plugin_optimizer(cfg, model)
    assert isinstance(optimizer, __import__("torch").optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)
    assert all(g["weight_decay"] == 5e-4 for g in optimizer.param_groups)
    names = {id(p): n for n, p in model.named_parameters()}
    factor = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            factor[names[id(p)]] = g["lr"] / cfg.SOLVER.BASE_LR
    assert factor["heads.classifier.weight"] == pytest.approx(10)
    assert factor["heads.bottleneck.weight"] == pytest.approx(10)
    assert factor["backbone.visible.conv1.weight"] == pytest.approx(1)
    assert "heads.bottleneck.bias" not in factor  # frozen at 0, as AGW
    (scheduler,) = build_epoch_lr_scheduler(cfg, optimizer).values()
    agw = {0: 0.01, 4: 0.05, 9: 0.1, 10: 0.1, 19: 0.1, 20: 0.01, 49: 0.01, 50: 0.001, 80: 0.001}
    for epoch, lr in agw.items():
        lrs = scheduler.lrs_at(epoch)
        assert max(lrs) == pytest.approx(lr), epoch  # the heads
        assert min(lrs) == pytest.approx(lr / 10), epoch  # the rest


def test_agw_draw_samples_k_with_replacement():
    """AGW's IdentitySampler: int(max(n_vis, n_ir) / (P K)) + 1 batches, P distinct identities,
    K of each modality per identity drawn with replacement (repeats even when n >= K)."""
    from plugins.data.samplers import ModalityIdentityBatchSampler

    pids, mods = [], []
    for pid in range(6):
        pids += [pid] * 9
        mods += ["visible"] * 5 + ["infrared"] * 4
    sampler = ModalityIdentityBatchSampler(
        pids, mods, 8, 2, seed=0, world_size=1, rank=0, draw="agw"
    )
    assert sampler.epoch_iterations() == 30 // 4 + 1
    repeats = 0
    for epoch in range(3):
        batches = [b[0] for b in sampler.global_batches(epoch)]
        assert len(batches) == sampler.epoch_iterations()
        for b in batches:
            vis, ir = b[:4], b[4:]
            assert [mods[i] for i in vis] == ["visible"] * 4
            assert [mods[i] for i in ir] == ["infrared"] * 4
            assert [pids[i] for i in vis] == [pids[i] for i in ir]
            assert len({pids[i] for i in vis}) == 2
            repeats += len(set(vis)) < 4 or len(set(ir)) < 4
    assert repeats > 0
