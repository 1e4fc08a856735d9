"""Image transforms for single images and RGB + thermal pairs, on fast-reid's 0-255 range.

Training follows IRRA (``datasets/build.py``, ``build_transforms`` with ``aug=True``): bilinear
resize, horizontal flip, pad + random crop, random erasing of 2-40 % of the image filled with
the value that equals CLIP's mean after normalisation; test: bilinear resize. Normalisation
happens in the model (``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``), so an erased box is filled here
with the 0-255 value the model's normalisation turns into IRRA's fill (``normalised_mean_fill``).
For an RGB + thermal pair every random step (flip, crop offset, erasing box) is drawn once and
applied to both images: the pair is registered, and a step applied to one alone would break the
pixel correspondence the token-wise fusions rely on.
"""

import math

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T

from ..modeling.clip import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD


def to_tensor(img):
    """PIL RGB image -> float tensor (3, H, W) in 0-255 (fast-reid's range, not 0-1)."""
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float()


INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}
ERASING_FILLS = ("normalised_mean", "value")


def normalised_mean_fill(pixel_mean, pixel_std):
    """The 0-255 fill that the model's normalisation turns into the mean itself, IRRA's fill.

    IRRA erases the normalised tensor with ``value=mean`` (CLIP's mean in 0-1 units). The model
    computes ``(x - pixel_mean) / pixel_std`` on 0-255 pixels, so the raw value is
    ``x = pixel_mean + pixel_std * pixel_mean / 255`` (``(m * s + m) * 255`` in 0-1 units m, s):
    about (155.8, 147.3, 132.8) for CLIP, not 0 and not the mean pixel (which normalises to 0).

    Args:
        pixel_mean (list): per-channel mean in 0-255 (``MODEL.PIXEL_MEAN``).
        pixel_std (list): per-channel std in 0-255 (``MODEL.PIXEL_STD``).
    Returns:
        list: the per-channel fill in 0-255.
    """
    return [m + s * m / 255.0 for m, s in zip(pixel_mean, pixel_std)]


def erasing_fill_from_config(cfg):
    """The 0-255 fill of an erased box that ``INPUT.REA.FILL`` selects."""
    fill = cfg.INPUT.REA.FILL
    if fill == "normalised_mean":
        return normalised_mean_fill(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)
    if fill == "value":
        return list(cfg.INPUT.REA.VALUE)
    raise ValueError(f"INPUT.REA.FILL={fill!r}; expected one of {ERASING_FILLS}")


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image; the message names the file."""


def read_image(path, mode="RGB"):
    """Read an image as a PIL image in ``mode``; a thermal (single-channel) image becomes 3-channel.

    Raises ``ImageReadError`` naming ``path`` when the file cannot be opened or fully decoded.
    """
    try:
        with Image.open(path) as img:
            # Decode every byte here: PIL opens lazily, and a truncated file would otherwise
            # fail later, inside a transform, with no file name.
            img.load()
            return img.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(
            f"cannot read image {path}: {e}\n"
            "Check every image of the dataset before training with: "
            "python tools/dataset_stats.py --dataset NAME --verify"
        ) from e


class PairTransform:
    """Transform an image, or a registered RGB + thermal pair, into float tensors in 0-255.

    Every random step is drawn once per call and applied to every image given: the flip, the
    pad-crop offset and the erasing rectangle. RGBT-PEDES pairs are pixel-aligned and fused
    token by token, so token i of the RGB and of the thermal image must show the same place.
    All randomness comes from ``generator`` when one is passed (the training sampler passes a
    per-sample seed, which makes augmentation reproducible and resumable); otherwise from
    torch's global RNG.

    Args:
        size (tuple): (H, W) output size.
        is_train (bool): apply the training augmentation.
        flip_prob (float): horizontal flip probability (0 disables flip).
        padding (int): pad by this many pixels, then random-crop back to ``size`` (0 disables).
        erasing_prob (float): random-erasing probability (0 disables).
        erasing_value (list): fill value of an erased box, 0-255 per channel; None: IRRA's
            under CLIP's normalisation, ``normalised_mean_fill(CLIP_PIXEL_MEAN, CLIP_PIXEL_STD)``.
        erasing_scale (tuple): range of the erased area relative to the image (IRRA's
            (0.02, 0.4); torchvision's default is (0.02, 0.33)).
        erasing_ratio (tuple): range of the erased box's aspect ratio h / w.
        interpolation (str): resize filter, "bilinear" (IRRA's, torchvision's default) or
            "bicubic".
    """

    def __init__(
        self,
        size,
        is_train,
        flip_prob=0.5,
        padding=10,
        erasing_prob=0.5,
        erasing_value=None,
        erasing_scale=(0.02, 0.4),
        erasing_ratio=(0.3, 3.3),
        interpolation="bilinear",
    ):
        self.size = tuple(size)
        self.is_train = is_train
        self.flip_prob = flip_prob if is_train else 0.0
        self.padding = padding if is_train else 0
        self.erasing_prob = erasing_prob if is_train else 0.0
        if erasing_value is None:
            erasing_value = normalised_mean_fill(CLIP_PIXEL_MEAN, CLIP_PIXEL_STD)
        self.erasing_value = torch.tensor(list(erasing_value), dtype=torch.float32).view(-1, 1, 1)
        self.erasing_scale = tuple(erasing_scale)
        self.erasing_log_ratio = (math.log(erasing_ratio[0]), math.log(erasing_ratio[1]))
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"resize interpolation {interpolation!r}; expected one of {tuple(INTERPOLATIONS)}"
            )
        # PIL images: PIL's filters, which are antialiased when shrinking, as IRRA's T.Resize.
        self.resize = T.Resize(self.size, interpolation=INTERPOLATIONS[interpolation])

    @classmethod
    def from_config(cls, cfg, is_train):
        size = cfg.INPUT.SIZE_TRAIN if is_train else cfg.INPUT.SIZE_TEST
        return cls(
            size,
            is_train,
            flip_prob=cfg.INPUT.FLIP.PROB if cfg.INPUT.FLIP.ENABLED else 0.0,
            padding=cfg.INPUT.PADDING.SIZE if cfg.INPUT.PADDING.ENABLED else 0,
            erasing_prob=cfg.INPUT.REA.PROB if cfg.INPUT.REA.ENABLED else 0.0,
            erasing_value=erasing_fill_from_config(cfg),
            erasing_scale=cfg.INPUT.REA.SCALE,
            interpolation=cfg.INPUT.RESIZE_INTERPOLATION,
        )

    @staticmethod
    def _uniform(generator, low=0.0, high=1.0):
        return low + (high - low) * torch.rand((), generator=generator).item()

    @staticmethod
    def _randint(generator, high):
        """An integer in [0, high]."""
        return int(torch.randint(0, high + 1, (), generator=generator).item())

    def draw(self, generator=None):
        """The random parameters of one call: ``(flip, crop_offset, erase_box)``.

        crop_offset: (top, left) in the padded image, or None; erase_box: (top, left, h, w) in
        the output, or None.
        """
        flip = self.flip_prob > 0 and self._uniform(generator) < self.flip_prob
        crop = None
        if self.padding > 0:
            p = self.padding
            crop = (self._randint(generator, 2 * p), self._randint(generator, 2 * p))
        box = None
        if self.erasing_prob > 0 and self._uniform(generator) < self.erasing_prob:
            height, width = self.size
            # As torchvision's RandomErasing: up to 10 tries for a box that fits.
            for _ in range(10):
                area = height * width * self._uniform(generator, *self.erasing_scale)
                ratio = math.exp(self._uniform(generator, *self.erasing_log_ratio))
                h = int(round(math.sqrt(area * ratio)))
                w = int(round(math.sqrt(area / ratio)))
                if 0 < h < height and 0 < w < width:
                    box = (
                        self._randint(generator, height - h),
                        self._randint(generator, width - w),
                    )
                    box += (h, w)
                    break
        return flip, crop, box

    def apply(self, img, flip, crop, box):
        """One PIL image with drawn parameters -> (3, H, W) float tensor in 0-255."""
        img = self.resize(img)
        if flip:
            img = TF.hflip(img)
        if crop is not None:
            img = TF.pad(img, self.padding)
            img = TF.crop(img, crop[0], crop[1], *self.size)
        tensor = to_tensor(img)
        if box is not None:
            top, left, h, w = box
            tensor[:, top : top + h, left : left + w] = self.erasing_value
        return tensor

    def __call__(self, *images, generator=None):
        """Transform one image or a pair with shared random steps; a tensor or a tuple of them."""
        params = self.draw(generator)
        out = tuple(self.apply(img, *params) for img in images)
        return out[0] if len(out) == 1 else out


def seeded_numpy_rng(generator=None):
    """A numpy generator drawn from ``generator`` (or torch's global RNG, which DataLoader
    worker seeding covers)."""
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (), generator=generator).item()))
