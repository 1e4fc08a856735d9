"""Pair augmentation: a registered RGB + thermal pair gets the same random steps; the text
pipeline's transforms are IRRA's (datasets/build.py, build_transforms)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T

from plugins.data.transforms import PairTransform, normalised_mean_fill, to_tensor
from plugins.engine import build_config
from plugins.modeling.clip import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD


def textured_image(h=80, w=40, seed=0):
    """A random image: any crop offset or flip difference shows up in the pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def train_transform(**kwargs):
    defaults = dict(flip_prob=0.5, padding=6, erasing_prob=0.5, erasing_value=(1.0, 2.0, 3.0))
    defaults.update(kwargs)
    return PairTransform((64, 32), is_train=True, **defaults)


def test_same_image_as_rgb_and_thermal_comes_out_identical_on_every_draw():
    transform = train_transform()
    img = textured_image()
    plain = transform(img, generator=torch.Generator().manual_seed(99))
    differs = 0
    for seed in range(60):
        rgb, thermal = transform(img, img, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(rgb, thermal)
        differs += not torch.equal(rgb, plain)
    assert differs > 50  # the draws do vary


def test_global_rng_path_also_shares_every_step():
    transform = train_transform()
    img = textured_image(seed=1)
    torch.manual_seed(0)
    for _ in range(30):
        rgb, thermal = transform(img, img)
        assert torch.equal(rgb, thermal)


def test_erasing_covers_the_same_rectangle_in_both():
    transform = train_transform(flip_prob=0.0, padding=0, erasing_prob=1.0)
    rgb_img, t_img = textured_image(seed=2), textured_image(seed=3)
    for seed in range(20):
        rgb, thermal = transform(rgb_img, t_img, generator=torch.Generator().manual_seed(seed))
        fill = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
        erased_rgb = (rgb == fill).all(0)
        erased_t = (thermal == fill).all(0)
        assert erased_rgb.any()
        assert torch.equal(erased_rgb, erased_t)
        rows, cols = erased_rgb.nonzero(as_tuple=True)
        box = erased_rgb[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # one rectangle


@pytest.mark.parametrize("step", ["flip", "crop"])
def test_each_geometric_step_is_shared(step):
    kwargs = {"flip_prob": 0.0, "padding": 0, "erasing_prob": 0.0}
    kwargs.update({"flip": {"flip_prob": 0.5}, "crop": {"padding": 8}}[step])
    transform = train_transform(**kwargs)
    img = textured_image(seed=4)
    outputs = set()
    for seed in range(20):
        rgb, thermal = transform(img, img, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(rgb, thermal)
        outputs.add(rgb.numpy().tobytes())
    assert len(outputs) > 1


def test_generator_makes_draws_reproducible_and_test_transform_deterministic():
    transform = train_transform()
    img = textured_image(seed=5)
    a = transform(img, generator=torch.Generator().manual_seed(7))
    b = transform(img, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    test = PairTransform((64, 32), is_train=False)
    assert torch.equal(test(img), test(img))
    assert test(img).shape == (3, 64, 32)


# ------------------------------------------------------------------ IRRA's transforms

ROOT = Path(__file__).resolve().parents[1]
# IRRA's normalisation (datasets/build.py), in 0-1 units.
IRRA_MEAN = [0.48145466, 0.4578275, 0.40821073]
IRRA_STD = [0.26862954, 0.26130258, 0.27577711]
TEXT_CONFIGS = sorted(
    str(p.relative_to(ROOT))
    for d in ("CUHKPEDES", "ICFGPEDES", "RSTPReid", "RGBTPEDES")
    for p in (ROOT / "configs" / d).rglob("*.yml")
) + [
    "configs/Base-TextRetrieval.yml",
    *(f"configs/Demo/{n}.yml" for n in ("tipr_clip_sdm", "irra", "fmfa", "corl", "mganet")),
    *(f"configs/Demo/{n}.yml" for n in ("mganet_baseline", "clip_sdm_rgb", "clip_sdm_add")),
]


def config(path="configs/Base-TextRetrieval.yml", *opts):
    return build_config(str(ROOT / path), ["MODEL.DEVICE", "cpu", *opts])


def model_normalised(x):
    """What the model makes of a 0-255 image: (x - MODEL.PIXEL_MEAN) / MODEL.PIXEL_STD."""
    mean = torch.tensor(CLIP_PIXEL_MEAN).view(3, 1, 1)
    return (x - mean) / torch.tensor(CLIP_PIXEL_STD).view(3, 1, 1)


def test_normalised_mean_fill_is_irras_fill_after_the_models_normalisation():
    fill = normalised_mean_fill(CLIP_PIXEL_MEAN, CLIP_PIXEL_STD)
    # (m * s + m) * 255 with IRRA's mean m and std s in 0-1 units.
    assert fill == pytest.approx([(m * s + m) * 255 for m, s in zip(IRRA_MEAN, IRRA_STD)])
    fill = torch.tensor(fill).view(3, 1, 1)
    # IRRA fills the normalised tensor with the mean itself (RandomErasing(value=mean)).
    assert torch.allclose(model_normalised(fill).flatten(), torch.tensor(IRRA_MEAN), atol=1e-6)
    # In pixels about (156, 147, 133): not 0, and not the mean pixel (which normalises to 0).
    assert fill.flatten().round().tolist() == [156.0, 147.0, 133.0]


@pytest.mark.parametrize("path", TEXT_CONFIGS)
def test_text_configs_run_irras_transforms(path):
    cfg = config(path, "MODEL.HEADS.NUM_CLASSES", "5")
    assert cfg.INPUT.RESIZE_INTERPOLATION == "bilinear"
    assert list(cfg.INPUT.REA.SCALE) == [0.02, 0.4] and cfg.INPUT.REA.FILL == "normalised_mean"
    # The Demo configs (tiny CPU runs) switch erasing off; the real-data configs keep IRRA's.
    assert cfg.INPUT.REA.ENABLED == (not path.startswith("configs/Demo/"))
    train = PairTransform.from_config(cfg, is_train=True)
    assert train.erasing_scale == (0.02, 0.4)
    fill = normalised_mean_fill(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)
    assert train.erasing_value.flatten().tolist() == pytest.approx(fill)


def test_test_transform_resizes_bilinear_as_irra():
    cfg = config("configs/Base-TextRetrieval.yml", "INPUT.SIZE_TEST", "[64, 32]")
    img = textured_image(200, 90, seed=7)  # shrinking: PIL's antialiased bilinear filter
    ours = PairTransform.from_config(cfg, is_train=False)(img)
    want = to_tensor(TF.resize(img, [64, 32], interpolation=T.InterpolationMode.BILINEAR))
    assert torch.equal(ours, want)
    bicubic = to_tensor(TF.resize(img, [64, 32], interpolation=T.InterpolationMode.BICUBIC))
    assert not torch.equal(ours, bicubic)
    # IRRA's test transform (Resize, ToTensor, Normalize) against ours + the model's step.
    irra = T.Compose([T.Resize((64, 32)), T.ToTensor(), T.Normalize(IRRA_MEAN, IRRA_STD)])
    assert torch.allclose(model_normalised(ours), irra(img), atol=1e-5)


def irra_train_reference(img, size, flip, crop, box, padding):
    """IRRA's training transform written with torchvision's functional ops, given the random
    draws: Resize, flip, Pad, crop, ToTensor, Normalize, RandomErasing(value=mean)."""
    x = TF.resize(img, list(size))  # T.Resize's default: bilinear, antialiased on PIL
    if flip:
        x = TF.hflip(x)
    x = TF.crop(TF.pad(x, padding), crop[0], crop[1], *size)
    x = TF.normalize(TF.to_tensor(x), IRRA_MEAN, IRRA_STD)
    if box is not None:
        x = TF.erase(x, *box, torch.tensor(IRRA_MEAN).view(3, 1, 1))
    return x


def test_default_training_transform_equals_irras_after_normalisation():
    cfg = config("configs/Base-TextRetrieval.yml", "INPUT.SIZE_TRAIN", "[64, 32]")
    transform = PairTransform.from_config(cfg, is_train=True)
    img = textured_image(150, 70, seed=8)
    erased = flipped = 0
    for seed in range(40):
        params = transform.draw(torch.Generator().manual_seed(seed))
        ours = model_normalised(transform.apply(img, *params))
        want = irra_train_reference(img, (64, 32), *params, padding=10)
        assert torch.allclose(ours, want, atol=1e-5), seed
        flipped += params[0]
        erased += params[2] is not None
    assert 5 < erased < 35 and 5 < flipped < 35  # p = 0.5 each, and both branches ran


def test_erased_area_spans_irras_scale():
    cfg = config()
    transform = PairTransform.from_config(cfg, is_train=True)
    transform.erasing_prob = 1.0
    height, width = cfg.INPUT.SIZE_TRAIN
    g = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(3000):
        box = transform.draw(g)[2]
        if box is not None:
            areas.append(box[2] * box[3] / (height * width))
    # Above torchvision's 0.33 and up to 0.4 (h and w are rounded, hence the margins).
    assert 0.36 < max(areas) < 0.42 and 0.015 < min(areas) < 0.03


def test_earlier_transforms_are_reachable_by_keys():
    cfg = config(
        "configs/Base-TextRetrieval.yml",
        "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.RESIZE_INTERPOLATION", "bicubic",
        "INPUT.REA.SCALE", "[0.02, 0.33]",
        "INPUT.REA.FILL", "value",
    )  # fmt: skip
    img = textured_image(200, 90, seed=9)
    ours = PairTransform.from_config(cfg, is_train=False)(img)
    assert torch.equal(ours, to_tensor(TF.resize(img, [64, 32], T.InterpolationMode.BICUBIC)))
    train = PairTransform.from_config(cfg, is_train=True)
    assert train.erasing_scale == (0.02, 0.33)
    # fast-reid's INPUT.REA.VALUE (ImageNet's mean x 255): about 0 after CLIP's normalisation.
    assert train.erasing_value.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    assert model_normalised(train.erasing_value).abs().max() < 0.02
    custom = config("configs/Base-TextRetrieval.yml", "INPUT.REA.FILL", "value",
                    "INPUT.REA.VALUE", "[0.0, 0.0, 0.0]")  # fmt: skip
    assert PairTransform.from_config(custom, is_train=True).erasing_value.abs().sum() == 0
    for key, value in (("INPUT.REA.FILL", "zero"), ("INPUT.RESIZE_INTERPOLATION", "nearest")):
        with pytest.raises(ValueError, match=value):
            PairTransform.from_config(config("configs/Base-TextRetrieval.yml", key, value), True)
