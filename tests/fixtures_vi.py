"""Tiny visible-infrared datasets in the official on-disk layouts, for reader tests.

Each ``write_*`` function writes one dataset folder below ``root`` (the ``FASTREID_DATASETS``
folder) and returns its path. Identities are non-contiguous and listed out of order, some
cameras hold no image of a person, and training labels are not 0..N-1, so relabelling is
visible in the counts the docstrings spell out.
"""

import os

from tests.fixtures_text import write_image


def _image(path, infrared=False):
    write_image(path, color=(90, 90, 90) if infrared else (200, 40, 10), size=(4, 8))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# pid -> {camera: number of images}
SYSU_IMAGES = {
    1: {1: 2, 3: 1, 4: 1},  # train: 3 visible, 1 infrared
    5: {2: 1, 6: 2},  # train: 1 visible, 2 infrared
    3: {5: 1, 3: 1},  # val (trains): 1 visible, 1 infrared
    2: {1: 1, 2: 1, 3: 2, 6: 1},  # test: 2 visible, 3 infrared
    7: {4: 1, 6: 1},  # test: 1 visible, 1 infrared
}
SYSU_SPLITS = {"train": "5,1", "val": "3", "test": "7,2"}


def write_sysumm01(root, images=None, splits=None):
    """SYSU-MM01 with training ids {1, 3, 5} (labels 0, 1, 2; 5 visible + 4 infrared images) and
    test ids {2, 7} (3 visible + 4 infrared)."""
    base = os.path.join(str(root), "SYSU-MM01")
    for cam in range(1, 7):
        os.makedirs(os.path.join(base, f"cam{cam}"), exist_ok=True)
    for pid, cams in (images or SYSU_IMAGES).items():
        for cam, count in cams.items():
            for k in range(1, count + 1):
                _image(os.path.join(base, f"cam{cam}", f"{pid:04d}", f"{k:04d}.jpg"), cam in (3, 6))
    for split, line in (splits or SYSU_SPLITS).items():
        _write(os.path.join(base, "exp", f"{split}_id.txt"), line + "\n")
    return base


# RegDB: 4 people, 2 visible + 2 thermal images each.
REGDB_SPLITS = {1: ([3, 1], [2, 4]), 2: ([2, 4], [1, 3])}  # trial: (train ids, test ids)


def regdb_rel(pid, modality, k):
    folder, tag = ("Visible", "v") if modality == "visible" else ("Thermal", "t")
    return f"{folder}/{pid}/male_front_{tag}_{pid * 10 + k:05d}_{k}.bmp"


def write_regdb(root, splits=None):
    """RegDB; trial 1 trains on ids 1, 3 (file labels 0, 1) and tests on 2, 4 (labels pid - 1),
    trial 2 the other way round. 4 visible + 4 thermal images per split."""
    base = os.path.join(str(root), "RegDB")
    for pid in range(1, 5):
        for modality in ("visible", "thermal"):
            for k in (1, 2):
                _image(os.path.join(base, regdb_rel(pid, modality, k)), modality == "thermal")
    for trial, (train, test) in (splits or REGDB_SPLITS).items():
        labels = {"train": {p: i for i, p in enumerate(sorted(train))}, "test": {}}
        labels["test"] = {p: p - 1 for p in test}
        for split, ids in (("train", train), ("test", test)):
            for modality in ("visible", "thermal"):
                lines = [
                    f"{regdb_rel(p, modality, k)} {labels[split][p]}" for p in ids for k in (1, 2)
                ]
                _write(
                    os.path.join(base, "idx", f"{split}_{modality}_{trial}.txt"),
                    "\n".join(lines) + "\n",
                )
    return base


def llcm_name(pid, cam, frame, mod):
    return f"{pid:04d}_c{cam:02d}_s{100000 + pid:06d}_f{frame:04d}_{mod}.jpg"


# Training: (folder pid, file label, [(modality, camera), ...]); labels 7 and 2 become 1 and 0.
LLCM_TRAIN = [
    (1, 7, [("vis", 1), ("vis", 1), ("vis", 3), ("nir", 1)]),
    (4, 2, [("vis", 2), ("nir", 4), ("nir", 4)]),
]
# Test: pid -> [(modality, camera), ...]
LLCM_TEST = {
    2: [("vis", 1), ("vis", 9), ("nir", 2)],
    3: [("vis", 5), ("nir", 4), ("nir", 4)],
}


def write_llcm(root, train=None, test=None, test_ids="2,3"):
    """LLCM with training people 1 and 4 (4 visible + 3 near-infrared images) and test people 2
    and 3 (3 visible + 3 near-infrared), plus a test folder of id 6 that ``test_id.txt`` omits."""
    base = os.path.join(str(root), "LLCM")
    lines = {"vis": [], "nir": []}
    for pid, label, shots in train or LLCM_TRAIN:
        for frame, (mod, cam) in enumerate(shots):
            rel = f"{mod}/{pid:04d}/{llcm_name(pid, cam, frame, mod)}"
            _image(os.path.join(base, rel), mod == "nir")
            lines[mod].append(f"{rel} {label}")
    for mod in ("vis", "nir"):
        _write(os.path.join(base, "idx", f"train_{mod}.txt"), "\n".join(lines[mod]) + "\n")
    for pid, shots in {**(test or LLCM_TEST), 6: [("vis", 1), ("nir", 1)]}.items():
        for frame, (mod, cam) in enumerate(shots):
            rel = f"test_{mod}/cam{cam}/{pid:04d}/{llcm_name(pid, cam, frame, mod)}"
            _image(os.path.join(base, rel), mod == "nir")
    _write(os.path.join(base, "idx", "test_id.txt"), test_ids + "\n")
    return base


# tools/train_net.py overrides for a short run of a CLIP VI-ReID method (CLIP4VI-ReID, RSBA) on
# the tiny CLIP ResNet: batches of 2 identities x (2 visible + 2 infrared), every iteration
# logged and checkpointed, two gallery draws.
CLIP_VI_SHORT_RUN = [
    "MODEL.CLIP.NAME", "tiny-rn",
    "MODEL.CLIP.STRIDE", "0",
    "SOLVER.IMS_PER_BATCH", "8",
    "DATALOADER.NUM_INSTANCE", "2",
    "SOLVER.CHECKPOINT_PERIOD", "1",
    "SOLVER.LOG_PERIOD", "1",
    "TEST.EVAL_PERIOD", "2",
    "TEST.VI_TRIALS", "2",
    "INPUT.PADDING.SIZE", "2",
    "SOLVER.AMP.ENABLED", "False",
]  # fmt: skip


def write_synthetic_vi(name, root, num_ids=8):
    """A synthetic SYSU-MM01- or RegDB-format set (with its caption file) below ``root``."""
    from plugins.synthetic import write_regdb, write_sysumm01

    if name == "SYSUMM01":
        return write_sysumm01(str(root), num_ids, seed=0, overwrite=True)
    return write_regdb(str(root), num_ids, seed=0, overwrite=True, images_per_id=4)
