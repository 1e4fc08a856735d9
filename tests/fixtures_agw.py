"""AGW's checkpoint layout (mangye16/Cross-Modal-Re-ID-baseline, ``embed_net``), regenerated from
a seeded recipe, and the golden files its code produced (tests/data/agw_golden/README.md).

Every entry of ``embed_net(class_num, no_local="on", gm_pool="on", arch="resnet50")``'s state
dict is drawn from its own generator, seeded by the key's CRC-32, so the ~285 MB checkpoint is
never committed: ``agw_state_dict()`` rebuilds it and ``AGW_STATE_SHA256`` pins it. Batch-norm
weights, biases and running statistics are all perturbed (the non-local blocks' ``W.1`` too,
which AGW initialises at 0), so that a missing non-local block, stem or BN changes the features.
"""

import os
import zlib

import torch

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "data", "agw_golden")
AGW_CLASS_NUM = 4
AGW_SEED = 2021
# sha256 of agw_state_dict() as plugins.engine.stages.tensor_fingerprint hashes it (sorted keys,
# dtype, shape, bytes).
AGW_STATE_SHA256 = "ab1d8abb75f86107a810aeba58d4069d8650b22b8728a3d83b19a813a77f4522"
# The same for agw_state_dict(non_local=False), --method base's embed_net.
AGW_BASE_STATE_SHA256 = "de8ba964351e4294f10d11781579e8b19e8dee11c79f3cc342ed4182487b8f24"

# AGW: non-local blocks after blocks 2, 3 of layer2 (512 channels) and 3, 4, 5 of layer3 (1024).
AGW_NON_LOCAL = {"NL_2": (512, 2), "NL_3": (1024, 3)}
# The modules of embed_net: three torchvision-style ResNet-50s (no fc) under these prefixes.
AGW_RESNET_PREFIXES = ("visible_module.visible.", "thermal_module.thermal.", "base_resnet.base.")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resnet50_shapes():
    """(key, shape) of a torchvision-style ResNet-50 without ``fc`` (AGW's ``resnet.py``)."""
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.resnet50()
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.startswith("fc.")]


def agw_key_shapes(class_num=AGW_CLASS_NUM, non_local=True):
    """Every (key, shape) of AGW's ``embed_net`` state dict, in its module order;
    ``non_local`` False: ``--method base``'s (no ``NL_*`` entries)."""
    resnet = _resnet50_shapes()
    out = [(p + k, s) for p in AGW_RESNET_PREFIXES[1::-1] for k, s in resnet]
    out += [("base_resnet.base." + k, s) for k, s in resnet]
    for name, (channels, count) in AGW_NON_LOCAL.items() if non_local else ():
        for i in range(count):
            p = f"{name}.{i}."
            out += [
                (p + "g.0.weight", (1, channels, 1, 1)),
                (p + "g.0.bias", (1,)),
                (p + "W.0.weight", (channels, 1, 1, 1)),
                (p + "W.0.bias", (channels,)),
                (p + "W.1.weight", (channels,)),
                (p + "W.1.bias", (channels,)),
                (p + "W.1.running_mean", (channels,)),
                (p + "W.1.running_var", (channels,)),
                (p + "W.1.num_batches_tracked", ()),
                (p + "theta.weight", (1, channels, 1, 1)),
                (p + "theta.bias", (1,)),
                (p + "phi.weight", (1, channels, 1, 1)),
                (p + "phi.bias", (1,)),
            ]
    out += [
        ("bottleneck.weight", (2048,)),
        ("bottleneck.bias", (2048,)),
        ("bottleneck.running_mean", (2048,)),
        ("bottleneck.running_var", (2048,)),
        ("bottleneck.num_batches_tracked", ()),
        ("classifier.weight", (class_num, 2048)),
    ]
    return out


def _entry(key, shape, seed):
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.tensor(7, dtype=torch.long)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    def normal(std):
        return std * torch.randn(shape, generator=gen)

    # A residual branch's last BN (bn3, the shortcut's, the non-local W.1) is damped, so that the
    # 16 blocks neither explode nor vanish with running statistics that match no real batch.
    last_bn = (".bn3." in key) or ("downsample.1." in key) or (".W.1." in key)
    if key.endswith("running_var"):
        return uniform(0.5, 2.0)
    if key.endswith("running_mean"):
        return normal(0.1)
    if len(shape) == 1 and key.endswith("weight"):  # BN scale
        return uniform(0.2, 0.5) if last_bn else uniform(0.5, 1.5)
    if key.endswith("bias"):
        return normal(0.1)
    if key == "classifier.weight":
        return normal(0.05)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return normal((2.0 / fan_in) ** 0.5)


def agw_state_dict(class_num=AGW_CLASS_NUM, seed=AGW_SEED, non_local=True):
    """AGW's ``embed_net`` state dict drawn from the seeded recipe (module docstring);
    ``non_local`` False: ``--method base``'s, the same entries without the ``NL_*`` ones."""
    return {k: _entry(k, s, seed) for k, s in agw_key_shapes(class_num, non_local)}


def agw_checkpoint(class_num=AGW_CLASS_NUM, seed=AGW_SEED, non_local=True):
    """AGW's ``best.t`` as its ``train.py`` saves it: ``net`` plus numpy ``cmc``, ``mAP``,
    ``mINP`` and an int ``epoch``."""
    import numpy as np

    return {
        "net": agw_state_dict(class_num, seed, non_local),
        "cmc": np.linspace(0.5, 1.0, 20, dtype=np.float32),
        "mAP": np.float32(0.4321),
        "mINP": np.float32(0.1234),
        "epoch": 42,
    }


def golden_inputs(u8):
    """AGW's normalised input from the committed uint8 images (B, 3, H, W): ToTensor then
    ImageNet mean / std, as AGW's transforms."""
    x = u8.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# SYSU-MM01-layout fixture for the --eval-only parity: pid -> {camera: images}. 20 test ids in
# every visible camera (1 or 2 images) and both infrared ones (1 image each): AGW's eval_sysu
# needs at least 20 gallery images left after its camera rule for every query (it stacks the
# per-query CMC curves cut at 20), indoor-search included. Train / val ids 1, 3 exist too.
AGW_SYSU_TEST_IDS = tuple(range(10, 30))
AGW_SYSU_IMAGES = {1: {1: 1, 3: 1}, 3: {2: 1, 6: 1}} | {
    pid: {1: 1 + pid % 2, 2: 1 + (pid // 2) % 2, 4: 1, 5: 1 + (pid // 3) % 2, 3: 1, 6: 1}
    for pid in AGW_SYSU_TEST_IDS
}
AGW_SYSU_SPLITS = {"train": "1", "val": "3", "test": ",".join(map(str, AGW_SYSU_TEST_IDS))}


def write_agw_sysu_fixture(root):
    """SYSU-MM01 layout under ``root/SYSU-MM01``: 64 x 32 RGB JPEGs (infrared ones too, as the
    dataset stores them), an identity's images sharing a seeded pattern plus per-image noise."""
    import numpy as np
    from PIL import Image

    base = os.path.join(str(root), "SYSU-MM01")
    for pid, cams in AGW_SYSU_IMAGES.items():
        pattern = np.random.default_rng([pid]).uniform(0, 255, (8, 4, 3))
        pattern = np.kron(pattern, np.ones((8, 8, 1)))
        for cam, count in cams.items():
            for k in range(1, count + 1):
                noise = np.random.default_rng([pid, cam, k]).normal(0, 40, (64, 32, 3))
                pixels = np.clip(pattern + noise, 0, 255).astype(np.uint8)
                if cam in (3, 6):
                    pixels = np.repeat(pixels.mean(axis=2, keepdims=True), 3, 2).astype(np.uint8)
                folder = os.path.join(base, f"cam{cam}", f"{pid:04d}")
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(pixels).save(os.path.join(folder, f"{k:04d}.jpg"), quality=95)
    os.makedirs(os.path.join(base, "exp"), exist_ok=True)
    for split, line in AGW_SYSU_SPLITS.items():
        with open(os.path.join(base, "exp", f"{split}_id.txt"), "w") as f:
            f.write(line + "\n")
    return base
