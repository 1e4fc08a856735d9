"""The two-stream CLIP ResNet shared by CLIP4VI-ReID and RSBA: the grid rule for 288x144 crops
(last stride 1, resized attention-pool positions), the split, per-modality routing, frozen
batch norms, lr factors a model declares, and the paired halves of a two-modality batch."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from plugins.engine import build_config  # noqa: E402
from plugins.engine.optimizer import build_plugin_optimizer  # noqa: E402
from plugins.modeling.clip import (  # noqa: E402
    CLIPImageEncoder,
    build_clip_model,
    count_parameters,
)
from plugins.modeling.two_stream import (  # noqa: E402
    TwoStreamCLIPResNet,
    freeze_frozen_norms,
    modality_masks,
    paired_halves,
)
from tests.fixtures_model import ROOT  # noqa: E402


def tiny(image_size=(64, 32), last_stride=1, weights=""):
    torch.manual_seed(0)
    return build_clip_model(
        "tiny-rn",
        image_size=image_size,
        resnet_last_stride=last_stride,
        weights=weights,
        warn_random_init=False,
    )


def test_last_stride_one_halves_the_total_stride():
    model = tiny((64, 32), 1)
    assert model.visual.grid_size == (4, 2)
    x = torch.randn(2, 3, 64, 32)
    v = model.visual
    maps = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
    assert tuple(maps.shape[2:]) == (4, 2)
    assert tiny((64, 32), 2).visual.grid_size == (2, 1)


def test_person_crop_needs_last_stride_one():
    with pytest.raises(ValueError, match="divisible by 32.*RESNET_LAST_STRIDE 1"):
        tiny((288, 144), 2)
    with pytest.raises(ValueError, match="divisible by 16"):
        tiny((280, 140), 1)
    with pytest.raises(ValueError, match="1 or 2"):
        tiny((64, 32), 3)
    big = build_clip_model("RN50", image_size=(288, 144), resnet_last_stride=1,
                           warn_random_init=False)  # fmt: skip
    assert big.visual.grid_size == (18, 9)
    assert big.visual.attnpool.positional_embedding.shape == (18 * 9 + 1, 2048)


def test_square_checkpoint_loads_with_resized_pool_positions(tmp_path):
    """A checkpoint made at CLIP's 224 (7x7 pool grid) loads into the 64x32 last-stride-1 model:
    every weight as saved, the pool positions resized (mean token unchanged)."""
    torch.manual_seed(1)
    source = build_clip_model("tiny-rn", image_size=(224, 224), warn_random_init=False)
    assert source.visual.attnpool.positional_embedding.shape[0] == 50
    path = tmp_path / "tiny-rn.pt"
    torch.save(source.state_dict(), path)
    model = tiny((64, 32), 1, weights=str(path))
    assert torch.equal(model.visual.layer4[0].conv3.weight, source.visual.layer4[0].conv3.weight)
    assert torch.equal(
        model.visual.layer4[0].downsample[1].weight, source.visual.layer4[0].downsample[1].weight
    )
    pos = model.visual.attnpool.positional_embedding
    assert pos.shape[0] == 4 * 2 + 1
    assert torch.equal(pos[0], source.visual.attnpool.positional_embedding[0])


@pytest.mark.parametrize("split, specific", [("stem", 1), ("layer1", 2), ("layer3", 4)])
def test_streams_start_as_clip_and_split_where_asked(split, specific):
    model = tiny()
    reference = CLIPImageEncoder(model.visual).eval()
    x = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        expected = reference(x)[0]
        two = TwoStreamCLIPResNet(model.visual, split).eval()
        assert len(two.visible) == len(two.infrared) == specific
        assert len(two.shared.stages) == 5 - specific
        for codes in ([0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]):
            assert torch.allclose(two(x, torch.tensor(codes)), expected, atol=1e-5)
    names = [n for n, _ in two.named_parameters()]
    assert all(n.startswith(("visible.", "infrared.", "shared.")) for n in names)
    # Every parameter of CLIP's tower once, plus the second stream.
    assert count_parameters(two) == count_parameters(model.visual) + count_parameters(two.visible)


def test_each_image_goes_through_its_own_stream():
    two = TwoStreamCLIPResNet(tiny().visual).eval()
    with torch.no_grad():
        for p in two.infrared.parameters():
            p.add_(torch.randn_like(p))
        x = torch.randn(4, 3, 64, 32)
        mixed = two(x, torch.tensor([0, 1, 0, 1]))
        visible = two(x, torch.zeros(4, dtype=torch.long))
        infrared = two(x, torch.ones(4, dtype=torch.long))
    assert torch.allclose(mixed[[0, 2]], visible[[0, 2]], atol=1e-6)
    assert torch.allclose(mixed[[1, 3]], infrared[[1, 3]], atol=1e-6)
    assert not torch.allclose(visible, infrared, atol=1e-3)


def test_vit_and_bad_codes_are_refused():
    vit = build_clip_model("tiny-vit", image_size=(64, 32), stride=8, warn_random_init=False)
    with pytest.raises(TypeError, match="ResNet CLIP"):
        TwoStreamCLIPResNet(vit.visual)
    with pytest.raises(ValueError, match="MODALITY_SPECIFIC"):
        TwoStreamCLIPResNet(tiny().visual, "layer4")
    with pytest.raises(ValueError, match="0 \\(visible\\) or 1"):
        modality_masks(torch.tensor([0, 2]), 2, "cpu")
    with pytest.raises(ValueError, match="modality codes for a batch"):
        modality_masks(torch.tensor([0]), 2, "cpu")


def test_frozen_batch_norms_keep_their_statistics():
    two = TwoStreamCLIPResNet(tiny().visual)
    for p in two.visible.parameters():
        p.requires_grad_(False)
    two.train()
    freeze_frozen_norms(two)
    frozen_bn = two.visible[0].bn1
    trained_bn = two.infrared[0].bn1
    assert not frozen_bn.training and trained_bn.training
    before = frozen_bn.running_mean.clone(), trained_bn.running_mean.clone()
    two(torch.randn(4, 3, 64, 32) * 3 + 1, torch.tensor([0, 0, 1, 1]))
    assert torch.equal(frozen_bn.running_mean, before[0])
    assert not torch.equal(trained_bn.running_mean, before[1])


def test_frozen_batch_norms_named_to_keep_training_follow_the_batches():
    two = TwoStreamCLIPResNet(tiny().visual)
    for p in two.parameters():
        p.requires_grad_(False)
    two.train()
    freeze_frozen_norms(two, keep_training=("shared.",))
    shared_bn, stem_bn = two.shared.stages[0][0].bn1, two.visible[0].bn1
    assert shared_bn.training and not stem_bn.training
    before = shared_bn.running_mean.clone(), stem_bn.running_mean.clone()
    two(torch.randn(4, 3, 64, 32) * 3 + 1, torch.tensor([0, 0, 1, 1]))
    assert not torch.equal(shared_bn.running_mean, before[0])
    assert torch.equal(stem_bn.running_mean, before[1])


def test_paired_halves_follow_the_modality_sampler_layout():
    pids = torch.tensor([3, 3, 5, 5, 3, 3, 5, 5])
    codes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    vis, ir = paired_halves(codes, pids)
    assert vis.tolist() == [0, 1, 2, 3] and ir.tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="ModalityIdentitySampler"):
        paired_halves(codes, torch.tensor([3, 3, 5, 5, 5, 5, 3, 3]))
    with pytest.raises(ValueError, match="not paired"):
        paired_halves(torch.tensor([0, 0, 0, 1]), torch.tensor([1, 1, 1, 1]))


class _Declares(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(2, 2)
        self.text = nn.Linear(2, 2)

    def lr_factors(self):
        return {"text.": 0.01}


def test_optimizer_applies_the_lr_factors_a_model_declares():
    cfg = build_config(os.path.join(ROOT, "configs/Demo/regdb_rsba.yml"), ["MODEL.DEVICE", "cpu"])
    optimizer, _ = build_plugin_optimizer(cfg, _Declares())
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    base = cfg.SOLVER.BASE_LR
    bias = base * cfg.SOLVER.BIAS_LR_FACTOR
    assert lrs == pytest.approx(sorted({base, bias, base * 0.01, bias * 0.01}))
