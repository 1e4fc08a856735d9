"""IRRA's optimizer: parameter groups of a tiny MGANet, Adam's eps / betas, and Cat's init."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402

import projects.mganet  # noqa: E402, F401
from plugins.engine import build_config  # noqa: E402
from plugins.engine.optimizer import build_plugin_optimizer  # noqa: E402
from plugins.modeling.fusion import TokenFusion  # noqa: E402

LR, WD = 1e-5, 4e-5
TINY_MGANET = [
    "MODEL.CLIP.NAME", "tiny-vit",
    "MODEL.CLIP.STRIDE", "8",
    "MODEL.BACKBONE.PRETRAIN", "False",
    "MODEL.CLIP.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "INPUT.SIZE_TRAIN", "[64, 32]",
    "SOLVER.BASE_LR", str(LR),
    "SOLVER.WEIGHT_DECAY", str(WD),
]  # fmt: skip


def expected_lr_and_decay(name):
    """IRRA's rules written out per parameter name of MGANet (independent of the implementation)."""
    in_cross = name.startswith("fusion.") or any(
        name.startswith(f"heads.{b}.{part}.")
        for b in ("frt", "vrt", "trt")
        for part in ("cross_attn", "blocks")
    )
    in_head = name.startswith("heads.mlm.")
    lr, decay = LR, WD
    if in_cross:
        lr = 5 * LR
    if "bias" in name:
        lr, decay = 2 * LR, 0.0
    if in_head:
        lr = 5 * LR
    return lr, decay


@pytest.fixture(scope="module")
def mganet_optimizer():
    cfg = build_config("configs/Demo/mganet.yml", TINY_MGANET)
    model = build_model(cfg)
    optimizer, _ = build_plugin_optimizer(cfg, model)
    return model, optimizer


def test_every_parameter_gets_irra_lr_and_weight_decay(mganet_optimizer):
    model, optimizer = mganet_optimizer
    by_param = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in by_param, "a parameter is in two groups"
            by_param[id(p)] = group
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(by_param) == len(trainable)
    for name, param in trainable.items():
        group = by_param[id(param)]
        assert (group["lr"], group["weight_decay"]) == pytest.approx(expected_lr_and_decay(name)), (
            name
        )


def test_irra_groups_on_the_names_that_matter(mganet_optimizer):
    model, optimizer = mganet_optimizer
    groups = {g["name"]: g for g in optimizer.param_groups}
    check = {
        # attention input bias of a new cross-modal layer: the bias rule wins (2x, no decay)
        "heads.frt.cross_attn.in_proj_bias": (2 * LR, 0.0),
        "heads.frt.cross_attn.in_proj_weight": (5 * LR, WD),
        "heads.frt.blocks.0.ln_1.weight": (5 * LR, WD),
        # IRRA's new LayerNorms around the cross-modal encoder stay at 1x, with decay
        "heads.frt.ln_pre_text.weight": (LR, WD),
        "heads.frt.ln_post.bias": (2 * LR, 0.0),
        # MLM head: 5x, its bias 5x without decay
        "heads.mlm.fc.weight": (5 * LR, WD),
        "heads.mlm.fc.bias": (5 * LR, 0.0),
        # fusion layers at 5x (a documented deviation)
        "fusion.weight_branch.weight": (5 * LR, WD),
        # pretrained CLIP: LayerNorm weights decay like any weight (fast-reid's norm default
        # would differ)
        "text_encoder.ln_final.weight": (LR, WD),
    }
    for name, (lr, decay) in check.items():
        assert name in groups, sorted(groups)[:20]
        assert (groups[name]["lr"], groups[name]["weight_decay"]) == pytest.approx((lr, decay))
    clip_biases = [n for n in groups if n.startswith("image_encoder") and n.endswith("bias")]
    assert clip_biases and all(groups[n]["lr"] == pytest.approx(2 * LR) for n in clip_biases)


def test_adam_uses_irra_eps_and_betas(mganet_optimizer):
    _, optimizer = mganet_optimizer
    assert isinstance(optimizer, torch.optim.Adam)
    # The Demo configs fine-tune a tiny fp32 CLIP with Adam's usual eps; the real-data configs
    # keep IRRA's.
    assert optimizer.defaults["eps"] == pytest.approx(1e-8)
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    for path in ("configs/RGBTPEDES/mganet.yml", "configs/CUHKPEDES/irra.yml"):
        assert build_config(path).SOLVER.ADAM_EPS == pytest.approx(1e-3), path


def test_fastreid_groups_remain_available():
    cfg = build_config("configs/Demo/mganet.yml", TINY_MGANET + ["SOLVER.PARAM_GROUPS", "fastreid"])
    model = build_model(cfg)
    optimizer, _ = build_plugin_optimizer(cfg, model)
    groups = optimizer.param_groups
    names = dict(model.named_parameters())
    in_proj_bias = names["heads.frt.cross_attn.in_proj_bias"]
    group = next(g for g in groups if any(p is in_proj_bias for p in g["params"]))
    # fast-reid matches only parameters named exactly "bias": in_proj_bias keeps decay
    assert group["weight_decay"] == pytest.approx(WD)


def test_cat_fusion_is_an_ordinary_linear_layer_by_default():
    torch.manual_seed(0)
    rgb, thermal = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    cat = TokenFusion("cat", 16)
    assert not torch.allclose(cat(rgb, thermal), (rgb + thermal) / 2, atol=1e-3)
    averaged = TokenFusion("cat", 16, cat_init="average")
    assert torch.allclose(averaged(rgb, thermal), (rgb + thermal) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="Cat initialisation"):
        TokenFusion("cat", 16, cat_init="zeros")


def test_a_schedule_without_epochs_after_the_warm_up_is_a_clear_error():
    from plugins.engine.trainer import PluginTrainer

    # fast-reid's per-iteration schedule (the text configs schedule per epoch: test_epoch_schedule)
    opts = TINY_MGANET + ["SOLVER.SCHED_UNIT", "iteration"]
    opts += ["SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_ITERS", "15"]
    cfg = build_config("configs/Demo/mganet.yml", opts)
    optimizer, _ = build_plugin_optimizer(cfg, build_model(cfg))
    with pytest.raises(ValueError, match="no epoch to anneal"):
        PluginTrainer.build_lr_scheduler(cfg, optimizer, iters_per_epoch=10)
    # A warm-up as long as the whole training never reaches the cosine schedule: allowed.
    assert PluginTrainer.build_lr_scheduler(cfg, optimizer, iters_per_epoch=7)
    schedulers = PluginTrainer.build_lr_scheduler(cfg, optimizer, iters_per_epoch=20)
    assert "lr_sched" in schedulers
