"""Tiny image re-identification fixtures in official layouts (fast-reid's own readers)."""

import os

import numpy as np
from PIL import Image


def write_market1501(root, num_train_ids=6, num_test_ids=4, images_per_id=4, size=(64, 32), seed=0):
    """``<root>/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/`` with
    ``<pid %04d>_c<cam>s1_<frame %06d>_00.jpg`` names; each identity has its own colour layout."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "Market-1501-v15.09.15")
    h, w = size

    def person(pid):
        colours = np.random.default_rng(pid).integers(0, 256, size=(3, 3))
        img = np.zeros((h, w, 3), dtype=np.float32)
        for band, colour in enumerate(colours):
            img[band * h // 3 : (band + 1) * h // 3] = colour
        img += rng.normal(0, 12, size=img.shape)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))

    def save(folder, pid, cam, frame):
        os.makedirs(os.path.join(base, folder), exist_ok=True)
        name = f"{pid:04d}_c{cam}s1_{frame:06d}_00.jpg"
        person(pid).save(os.path.join(base, folder, name))

    frame = 0
    for pid in range(1, num_train_ids + 1):
        for k in range(images_per_id):
            frame += 1
            save("bounding_box_train", pid, 1 + k % 2, frame)
    for pid in range(num_train_ids + 1, num_train_ids + num_test_ids + 1):
        frame += 1
        save("query", pid, 1, frame)
        for k in range(images_per_id - 1):
            frame += 1
            save("bounding_box_test", pid, 2 + k % 2, frame)
    return base
