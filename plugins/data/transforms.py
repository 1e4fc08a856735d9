"""Image transforms for single images and RGB + thermal pairs, on fast-reid's 0-255 range.

Training follows IRRA: resize, horizontal flip, pad + random crop, random erasing. For a pair, the
horizontal flip is drawn once and applied to both images (they are calibrated: a flip of one
alone would break the pixel correspondence); padding-crop and erasing are drawn per image.
"""

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T


def to_tensor(img):
    """PIL RGB image -> float tensor (3, H, W) in 0-255 (fast-reid's range, not 0-1)."""
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float()


def read_image(path, mode="RGB"):
    """Read an image as a PIL image in ``mode``; a thermal (single-channel) image becomes 3-channel."""
    with Image.open(path) as img:
        return img.convert(mode)


class PairTransform:
    """Transform an image, or an RGB + thermal pair, into float tensors in 0-255.

    Args:
        size (tuple): (H, W) output size.
        is_train (bool): apply the training augmentation.
        flip_prob (float): horizontal flip probability (0 disables flip).
        padding (int): pad then random-crop back to ``size`` (0 disables).
        erasing_prob (float): random-erasing probability (0 disables).
        erasing_value (list): fill value of an erased box, 0-255 per channel.
    """

    def __init__(
        self,
        size,
        is_train,
        flip_prob=0.5,
        padding=10,
        erasing_prob=0.5,
        erasing_value=(0.0, 0.0, 0.0),
    ):
        self.size = tuple(size)
        self.is_train = is_train
        self.flip_prob = flip_prob if is_train else 0.0
        self.resize = T.Resize(self.size, interpolation=T.InterpolationMode.BICUBIC)
        per_image = []
        if is_train and padding > 0:
            per_image += [T.Pad(padding), T.RandomCrop(self.size)]
        self.per_image = T.Compose(per_image) if per_image else None
        self.erase = (
            T.RandomErasing(p=erasing_prob, value=list(erasing_value))
            if is_train and erasing_prob > 0
            else None
        )

    @classmethod
    def from_config(cls, cfg, is_train):
        size = cfg.INPUT.SIZE_TRAIN if is_train else cfg.INPUT.SIZE_TEST
        return cls(
            size,
            is_train,
            flip_prob=cfg.INPUT.FLIP.PROB if cfg.INPUT.FLIP.ENABLED else 0.0,
            padding=cfg.INPUT.PADDING.SIZE if cfg.INPUT.PADDING.ENABLED else 0,
            erasing_prob=cfg.INPUT.REA.PROB if cfg.INPUT.REA.ENABLED else 0.0,
            erasing_value=cfg.INPUT.REA.VALUE,
        )

    def _one(self, img, flip):
        img = self.resize(img)
        if flip:
            img = TF.hflip(img)
        if self.per_image is not None:
            img = self.per_image(img)
        tensor = to_tensor(img)
        if self.erase is not None:
            tensor = self.erase(tensor)
        return tensor

    def __call__(self, *images):
        """Transform one image or a pair with a shared flip; returns a tensor or a tuple of them."""
        flip = self.flip_prob > 0 and torch.rand(()).item() < self.flip_prob
        out = tuple(self._one(img, flip) for img in images)
        return out[0] if len(out) == 1 else out


def seeded_numpy_rng():
    """A numpy generator drawn from torch's RNG, so DataLoader worker seeding covers numpy too."""
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
