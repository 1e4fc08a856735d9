"""AGW's two-stream ResNet-50 (AGWTwoStream) against AGW's own code (tests/data/agw_golden)."""

import copy
import logging
import os
import pickle

import pytest
import torch
from torch import nn

import plugins  # noqa: F401
from plugins.engine import build_config
from plugins.engine.checkpoint import Checkpointer, CheckpointError
from plugins.engine.stages import tensor_fingerprint
from plugins.modeling.agw import AGWGeneralizedMeanPooling
from plugins.modeling.agw_checkpoint import (
    AGWCheckpointError,
    from_agw_state_dict,
    is_agw_checkpoint,
)
from plugins.modeling.losses import agw_wrt_loss, wrt_loss
from tests.fixtures_agw import (
    AGW_BASE_STATE_SHA256,
    AGW_CLASS_NUM,
    AGW_STATE_SHA256,
    GOLDEN_DIR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    agw_checkpoint,
    agw_state_dict,
    golden_inputs,
)

FEAT_ATOL = 1e-4
LOSS_RTOL = 1e-5
LOSS64_RTOL = 1e-9  # float64 against AGW's float64 run


@pytest.fixture(scope="module")
def golden():
    return torch.load(os.path.join(GOLDEN_DIR, "agw_golden.pt"), weights_only=True)


@pytest.fixture(scope="module")
def agw_state():
    torch.manual_seed(0)
    return agw_state_dict()


AGW_CONFIG = "configs/SYSUMM01/agw_two_stream.yml"
BASE_CONFIG = "configs/SYSUMM01/agw_two_stream_base.yml"  # train.py --method base


def build_agw(training_heads=True, num_classes=AGW_CLASS_NUM, config=AGW_CONFIG):
    from fastreid.modeling import build_model

    cfg = build_config(
        config,
        [
            "MODEL.BACKBONE.PRETRAIN", "False",
            "MODEL.HEADS.NUM_CLASSES", str(num_classes),
            "MODEL.TRAINING_HEADS", str(training_heads),
            "MODEL.DEVICE", "cpu",
            # AGW's ToTensor + Normalize on 0-255 input
            "MODEL.PIXEL_MEAN", str([255 * m for m in IMAGENET_MEAN]),
            "MODEL.PIXEL_STD", str([255 * s for s in IMAGENET_STD]),
        ],
    )  # fmt: skip
    return build_model(cfg)


@pytest.fixture(scope="module")
def agw_model(agw_state):
    model = build_agw()
    model.load_state_dict(from_agw_state_dict(agw_state), strict=True)
    return model


def _eval_features(model, images):
    """(vis_pool, vis_bn, ir_pool, ir_bn), L2-normalised, of the golden batch's halves."""
    model.eval()
    vis, ir = images[:4].float(), images[4:].float()
    out = []
    with torch.no_grad():
        for x, code in ((vis, 0), (ir, 1)):
            mods = torch.full((x.shape[0],), code)
            for neck in ("before", "after"):
                model.neck_feat = neck
                out.append(model.encode_image({"images": x, "modalities": mods}))
    model.neck_feat = "after"
    return out


def test_seeded_checkpoint_recipe(agw_state):
    assert tensor_fingerprint(agw_state) == AGW_STATE_SHA256
    # every batch norm of the recipe is perturbed: none at AGW's or torch's initial values
    assert not torch.all(agw_state["NL_3.2.W.1.weight"] == 0)
    assert not torch.all(agw_state["base_resnet.base.layer1.0.bn1.running_var"] == 1)


def assert_features_match(model, golden):
    """Pooled and BN features of both modalities within FEAT_ATOL of AGW's, each named."""
    feats = _eval_features(model, golden["images"])
    for got, name in zip(feats, ("vis_pool", "vis_bn", "ir_pool", "ir_bn"), strict=True):
        diff = (got - golden[name]).abs().max().item()
        assert diff <= FEAT_ATOL, f"{name}: max |diff| {diff:.2e}"


def test_features_match_agw(agw_model, golden):
    assert_features_match(agw_model, golden)


@pytest.fixture(scope="module")
def golden_float64():
    """AGW's code run in float64 on the golden batch: ``{method}/loss_*`` (README)."""
    return torch.load(os.path.join(GOLDEN_DIR, "agw_losses_float64.pt"), weights_only=True)


def training_losses(model, golden):
    """The model's training losses on the golden batch, in float64 on AGW's own normalised
    input, as AGW's float64 run (``agw_losses_float64.pt``): the network and the losses alone
    are compared. In float32 the train-mode BNNeck over 8 images amplifies rounding: the ID
    loss moves by 3e-5 relative with the thread count (3.46287 on one thread, 3.46277 on two),
    and AGW's own float32 runs lie 1.3e-6 (agw) and 1.7e-5 (base) from their float64 values."""
    model = copy.deepcopy(model).double()
    images = golden_inputs(golden["images"]).double()
    modalities = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    model.pixel_mean.zero_()
    model.pixel_std.fill_(1.0)
    model.train()
    return model({"images": images, "targets": golden["labels"], "modalities": modalities})


@pytest.mark.parametrize(
    "method, model_fixture, triplet",
    [("agw", "agw_model", "loss_wrt"), ("base", "base_model", "loss_triplet")],
)
def test_training_losses_match_agw(request, golden, golden_float64, method, model_fixture, triplet):
    """Both train.py methods: CrossEntropyLoss and TripletLoss_WRT (agw) / OriTripletLoss (base)."""
    losses = training_losses(request.getfixturevalue(model_fixture), golden)
    assert set(losses) == {"loss_id", triplet}
    for name in losses:
        got, want = losses[name].item(), golden_float64[f"{method}/{name}"].item()
        assert abs(got - want) <= LOSS64_RTOL * abs(want), f"{name}: {got} vs AGW's {want}"


def test_wrt_loss_matches_agw_on_its_features(golden):
    want = golden["loss_wrt"].item()
    got = agw_wrt_loss(golden["train_pool"], golden["labels"]).item()
    assert abs(got - want) <= LOSS_RTOL * abs(want)
    # at these distances (~30) the paper's form is another function: the config key matters
    assert abs(wrt_loss(golden["train_pool"], golden["labels"]).item() - want) > 0.1 * want


def _max_diff(model, golden):
    feats = _eval_features(model, golden["images"])
    names = ("vis_pool", "vis_bn", "ir_pool", "ir_bn")
    return max((f - golden[n]).abs().max().item() for f, n in zip(feats, names, strict=True))


@pytest.mark.parametrize("block", ["NL_2.0", "NL_3.2"])
def test_parity_fails_without_a_non_local_block(agw_model, golden, block):
    stage, index = block.split(".")
    blocks = getattr(agw_model.backbone.shared, stage)
    kept = blocks[int(index)]
    blocks[int(index)] = nn.Identity()
    try:
        assert _max_diff(agw_model, golden) > 100 * FEAT_ATOL
    finally:
        blocks[int(index)] = kept


def test_parity_fails_with_one_stem_for_both(agw_model, golden):
    kept = agw_model.backbone.infrared
    agw_model.backbone.infrared = agw_model.backbone.visible
    try:
        assert _max_diff(agw_model, golden) > 100 * FEAT_ATOL
    finally:
        agw_model.backbone.infrared = kept


def test_parity_fails_with_fastreid_stem_pool(agw_model, golden):
    # fast-reid's ResNet max-pools without padding (ceil_mode): not AGW's function
    kept = agw_model.backbone.visible.maxpool
    agw_model.backbone.visible.maxpool = nn.MaxPool2d(3, 2, ceil_mode=True)
    try:
        assert _max_diff(agw_model, golden) > 100 * FEAT_ATOL
    finally:
        agw_model.backbone.visible.maxpool = kept


def test_conversion_drops_known_unused_and_rejects_unknown(agw_state, caplog):
    with caplog.at_level(logging.INFO, logger="plugins.modeling.agw_checkpoint"):
        converted = from_agw_state_dict(agw_state)
    assert "dropping" in caplog.text
    assert not any(
        k.startswith(("visible_module", "thermal_module", "base_resnet")) for k in converted
    )
    # the stems and every non-local block are kept
    assert "backbone.infrared.conv1.weight" in converted
    assert "backbone.shared.NL_3.2.g.weight" in converted
    bad = dict(agw_state)
    bad["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(AGWCheckpointError, match="extra_head.weight"):
        from_agw_state_dict(bad)


@pytest.mark.parametrize(
    "dropped, named",
    [
        ("thermal_module.thermal.bn1", "backbone.infrared.bn1"),
        ("NL_3.2.", "backbone.shared.NL_3.2"),
    ],
)
def test_checkpoint_without_a_stem_or_non_local_block_is_an_error(
    tmp_path, agw_state, dropped, named
):
    """A checkpoint without the thermal stem's BN or a non-local block does not load strictly."""
    partial = {k: v for k, v in agw_state.items() if not k.startswith(dropped)}
    path = tmp_path / "best.t"
    torch.save({"net": partial, "epoch": 3}, path)
    model = build_agw(training_heads=False)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        Checkpointer(model).load(str(path), strict=True, evaluation=True)


@pytest.fixture(scope="module")
def agw_checkpoint_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("agw") / "sysu_agw_p4_n8_lr_0.1_seed_0_best.t"
    torch.save(agw_checkpoint(), path)
    return path


def test_agw_checkpoint_loads_as_model_weights(agw_checkpoint_file, golden, caplog):
    assert is_agw_checkpoint({"net": {"module.base_resnet.base.layer1.0.conv1.weight": 0}})
    assert not is_agw_checkpoint({"model": {"base_resnet.base.x": 0}})
    with pytest.raises(pickle.UnpicklingError):  # numpy entries: weights-only alone refuses them
        torch.load(agw_checkpoint_file, weights_only=True)
    model = build_agw(training_heads=False)
    with caplog.at_level(logging.INFO):
        Checkpointer(model).load(str(agw_checkpoint_file), strict=True, evaluation=True)
    assert "AGW's layout" in caplog.text and "'epoch': 42" in caplog.text
    assert _max_diff(model, golden) <= FEAT_ATOL


def test_agw_checkpoint_refused_by_other_models(agw_checkpoint_file):
    model = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="AGW's code"):
        Checkpointer(model).load(str(agw_checkpoint_file), strict=True)


@pytest.mark.parametrize("neck", ["after", "before"])
def test_eval_only_gives_agws_sysu_metrics(agw_checkpoint_file, tmp_path, neck):
    """``--eval-only`` with AGW's checkpoint on a SYSU-MM01 fixture: AGW's ``test.py`` path
    (``process_query_sysu``, ``process_gallery_sysu`` for trials 0-9, ``eval_sysu``) on its own
    features gave ``agw_sysu_metrics.json`` (BNNeck features "bn", pooled "pool")."""
    import json

    from tests.fixtures_agw import write_agw_sysu_fixture
    from tests.test_train_net import train_net

    write_agw_sysu_fixture(tmp_path / "data")
    out = tmp_path / "eval"
    train_net(
        "configs/SYSUMM01/agw_two_stream.yml", str(tmp_path / "data"),
        "MODEL.DEVICE", "cpu", "MODEL.HEADS.NECK_FEAT", neck,
        "TEST.VI_TRIALS", "10", "TEST.IMS_PER_BATCH", "64",
        "MODEL.WEIGHTS", str(agw_checkpoint_file), "OUTPUT_DIR", str(out),
        eval_only=True,
    )  # fmt: skip
    ours = json.loads((out / "results.json").read_text())["SYSUMM01"]
    with open(os.path.join(GOLDEN_DIR, "agw_sysu_metrics.json")) as f:
        theirs = json.load(f)
    feature = {"after": "bn", "before": "pool"}[neck]
    for mode in ("all_single", "indoor_single"):
        for metric, value in theirs[f"{mode}/{feature}"].items():
            assert ours[f"{mode}/{metric}"] == pytest.approx(value, abs=1e-4), (mode, metric)


def test_convert_tool_writes_the_plugins_format(agw_checkpoint_file, tmp_path, golden):
    import subprocess
    import sys

    tool = os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "tools", "convert_checkpoint.py"
    )
    out = tmp_path / "agw_sysu.pth"
    proc = subprocess.run(
        [sys.executable, tool, "--from", "agw", str(agw_checkpoint_file), str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'epoch': 42" in proc.stdout
    converted = torch.load(out, weights_only=True)
    assert set(converted) == {"model"}
    model = build_agw(training_heads=False)
    Checkpointer(model).load(str(out), strict=True, evaluation=True)
    assert _max_diff(model, golden) <= FEAT_ATOL
    # an IRRA-layout or fast-reid file is refused with a one-line message
    other = tmp_path / "other.pth"
    torch.save({"model": {"x": torch.zeros(1)}}, other)
    proc = subprocess.run(
        [sys.executable, tool, "--from", "agw", str(other), str(tmp_path / "o.pth")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and "not in AGW's layout" in proc.stderr


def test_other_python_objects_are_still_refused(tmp_path):
    """Only numpy arrays, scalars and dtypes join the weights-only load: AGW-like files holding
    any other object (here an argparse.Namespace) are refused, never unpickled."""
    import argparse

    from plugins.engine.checkpoint import NotACheckpointError

    path = tmp_path / "best.t"
    net = {"base_resnet.base.layer1.0.conv1.weight": torch.zeros(1)}
    torch.save({"net": net, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(NotACheckpointError, match="Python objects"):
        Checkpointer(nn.Linear(1, 1)).load(str(path))


# ---------------------------------------------------------------- train.py --method base


@pytest.fixture(scope="module")
def base_golden(golden):
    """AGW's embed_net(no_local="off", gm_pool="off") on the golden batch (README)."""
    out = torch.load(os.path.join(GOLDEN_DIR, "agw_base_golden.pt"), weights_only=True)
    return {**out, "images": golden["images"], "labels": golden["labels"]}


@pytest.fixture(scope="module")
def base_state():
    return agw_state_dict(non_local=False)


@pytest.fixture(scope="module")
def base_model(base_state):
    model = build_agw(config=BASE_CONFIG)
    model.load_state_dict(from_agw_state_dict(base_state), strict=True)
    return model


def test_base_recipe_is_the_agw_recipe_without_non_local_blocks(agw_state, base_state):
    assert tensor_fingerprint(base_state) == AGW_BASE_STATE_SHA256
    assert set(base_state) == {k for k in agw_state if not k.startswith("NL_")}
    assert all(torch.equal(base_state[k], agw_state[k]) for k in base_state)


def test_base_features_match_agw(base_model, base_golden):
    assert not hasattr(base_model.backbone.shared, "NL_2")
    assert_features_match(base_model, base_golden)
    # GeM in place of average pooling is another function: the parity tells them apart
    kept = base_model.pool
    base_model.pool = AGWGeneralizedMeanPooling()
    try:
        assert _max_diff(base_model, base_golden) > 100 * FEAT_ATOL
    finally:
        base_model.pool = kept


def test_hard_triplet_is_agws_ori_triplet_on_its_features(base_golden):
    from fastreid.modeling.losses import triplet_loss

    want = base_golden["loss_triplet"].item()
    feats, labels = base_golden["train_pool"], base_golden["labels"]
    got = triplet_loss(feats, labels, 0.3, norm_feat=False, hard_mining=True).item()
    assert abs(got - want) <= LOSS_RTOL * abs(want)
    # the check tells triplets apart: WRT on the same features is 8 % away
    assert abs(agw_wrt_loss(feats, labels).item() - want) > 100 * LOSS_RTOL * want


def test_a_base_checkpoint_loads_into_the_base_config_only(tmp_path, base_golden, caplog):
    path = tmp_path / "regdb_base_p4_n8_lr_0.1_seed_0_trial_1_best.t"
    torch.save(agw_checkpoint(non_local=False), path)
    model = build_agw(training_heads=False, config=BASE_CONFIG)
    with caplog.at_level(logging.INFO):
        Checkpointer(model).load(str(path), strict=True, evaluation=True)
    assert "AGW's layout" in caplog.text
    assert _max_diff(model, base_golden) <= FEAT_ATOL
    # into the --method agw network (GeM, non-local blocks) it is refused, naming the config
    with pytest.raises(AGWCheckpointError, match="--method base.*agw_two_stream_base.yml"):
        Checkpointer(build_agw(training_heads=False)).load(str(path), evaluation=True)


def test_an_agw_checkpoint_is_refused_by_the_base_config(agw_checkpoint_file):
    model = build_agw(training_heads=False, config=BASE_CONFIG)
    with pytest.raises(AGWCheckpointError, match="--method agw.*agw_two_stream.yml"):
        Checkpointer(model).load(str(agw_checkpoint_file), evaluation=True)
