"""Pair augmentation: a registered RGB + thermal pair gets the same random steps."""

import numpy as np
import pytest
import torch
from PIL import Image

from plugins.data.transforms import PairTransform


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
