"""Procedural synthetic pedestrian benchmark (numpy + PIL only, deterministic from a seed).

Every identity is a set of attributes (gender, age, build, height, hair, garments, shoes, carried
item, hat; colours from a small shared palette). Each image of an identity is one *view*
(front / back / side, pose, scale, background scene, lighting challenge) rendered twice from the
same label map: an RGB image and a single-channel thermal image (a temperature map: skin warm,
thin clothes warmer than coats, carried items cold, background cool). Captions mention a random
subset of the attributes that are visible in that very render, and every caption has a
colour-free twin.

Writers stream images to disk in the official layouts of RGBT-PEDES, CUHK-PEDES, RegDB, LLCM and
SYSU-MM01 (see ``shared/DATASETS.md``); ``tools/make_synthetic.py`` is their command line.

Randomness: every random choice comes from ``numpy.random.default_rng`` seeded with a tuple
``(seed, pid, ...)``, so an identity, a view or a caption does not depend on the order in which
things are generated, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "ALL_COLOR_WORDS",
    "CHALLENGES",
    "COLOR_NAMES",
    "HAIR_COLOR_NAMES",
    "PALETTE",
    "SCENES",
    "VIEWS",
    "WRITERS",
    "Identity",
    "ImageRecord",
    "Rendered",
    "ViewSpec",
    "assign_splits",
    "contact_sheet",
    "generate",
    "make_captions",
    "make_identity",
    "make_record",
    "render",
    "sample_view",
    "tokenize",
    "write_cuhkpedes",
    "write_llcm",
    "write_regdb",
    "write_rgbtpedes",
    "write_sysumm01",
]

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (232, 232, 228),
    "grey": (128, 128, 130),
    "red": (192, 32, 38),
    "blue": (36, 70, 172),
    "green": (38, 128, 58),
    "yellow": (232, 200, 40),
    "orange": (236, 120, 30),
    "pink": (236, 140, 178),
    "purple": (112, 52, 142),
    "brown": (110, 70, 40),
    "beige": (214, 194, 156),
}
#: The garment / accessory colour names (the palette). Captions use exactly these words.
COLOR_NAMES: list[str] = list(PALETTE)
#: Hair colours; all but "blonde" are palette names.
HAIR_COLOR_NAMES: tuple[str, ...] = ("black", "brown", "blonde", "grey", "white")
#: Every colour word a caption can contain.
ALL_COLOR_WORDS: tuple[str, ...] = tuple(COLOR_NAMES) + ("blonde",)

HAIR_RGB = {
    "black": (26, 22, 20),
    "brown": (92, 58, 32),
    "blonde": (214, 178, 108),
    "grey": (150, 148, 146),
    "white": (224, 222, 216),
}
SKIN_TONES = ((238, 200, 172), (222, 176, 140), (188, 138, 102), (128, 88, 62))

GENDERS = ("man", "woman")
AGES = ("young", "middle-aged", "elderly")
BUILDS = ("slim", "average", "heavy")
HAIR_STYLES = ("short", "long", "bald")
UPPER_TYPES = ("t-shirt", "shirt", "coat", "jacket", "dress")
LOWER_TYPES = ("trousers", "shorts", "skirt")
CARRY_TYPES = ("backpack", "handbag", "shoulder bag", "umbrella")
HAT_TYPES = ("cap", "hat")
VIEWS = ("front", "back", "side")
SCENES = ("street", "grass", "wall", "indoor")
CHALLENGES = (
    "normal",
    "low_light",
    "darkness",
    "strong_light",
    "abnormal_illumination",
    "occlusion",
)
OCCLUDERS = ("pole", "car", "box", "board")
#: Challenge distribution of RGBT-PEDES-like data: 45 % normal, the rest spread.
DEFAULT_CHALLENGE_WEIGHTS: dict[str, float] = {
    "normal": 0.45,
    "low_light": 0.15,
    "darkness": 0.1,
    "strong_light": 0.1,
    "abnormal_illumination": 0.1,
    "occlusion": 0.1,
}
DEFAULT_VIEW_WEIGHTS: dict[str, float] = {"front": 0.4, "back": 0.3, "side": 0.3}
BUILD_SCALE = {"slim": 0.88, "average": 1.0, "heavy": 1.2}

# Thermal "temperatures" on the 0..255 output scale.
_UPPER_TEMP = {"t-shirt": 190.0, "dress": 184.0, "shirt": 178.0, "jacket": 152.0, "coat": 130.0}
_LOWER_TEMP = {"shorts": 180.0, "skirt": 174.0, "trousers": 164.0}

# ----------------------------------------------------------------------------------------------
# Label map: the scene geometry shared by both modalities
# ----------------------------------------------------------------------------------------------

(
    L_SKY,
    L_WALL,
    L_WINDOW,
    L_FRAME,
    L_GROUND,
    L_MARK,
    L_CURB,
    L_GRASS,
    L_FOLIAGE,
    L_TRUNK,
    L_BRICK,
    L_MORTAR,
    L_FLOOR_A,
    L_FLOOR_B,
    L_DOOR,
    L_LAMP,
    L_BASEBOARD,
    L_SHADOW,
) = range(1, 19)
(
    L_SKIN,
    L_SKIN_SHADE,
    L_HEADSKIN,
    L_EYE,
    L_HAIR,
    L_HAT,
    L_UPPER,
    L_UPPER_SHADE,
    L_UPPER_DETAIL,
    L_LOWER,
    L_LOWER_SHADE,
    L_SHOES,
    L_BAG,
    L_STRAP,
    L_HANDLE,
) = range(32, 47)
L_OCC_A, L_OCC_B, L_OCC_C = 50, 51, 52
_N_LABELS = 64
_PERSON_LO, _PERSON_HI = 32, 48
_SS = 2  # supersampling factor of the label map


# ----------------------------------------------------------------------------------------------
# Data classes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Attributes of one synthetic person (``None`` = absent)."""

    pid: int
    gender: str
    age: str
    build: str
    height_cm: int
    skin_tone: int
    hair: str
    hair_color: str | None
    upper: str
    upper_color: str
    lower: str | None  # None when the upper garment is a dress
    lower_color: str | None
    shoes_color: str
    carry: str | None
    carry_color: str | None
    hat: str | None
    hat_color: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ViewSpec:
    """Everything about one image except the identity: viewpoint, pose, framing, scene, lighting.

    ``noise_seed`` seeds the background layout, textures, sensor noise and challenge effects.
    """

    view: str
    mirror: bool
    challenge: str
    scene: str
    scale: float
    dx: float
    feet: float
    arm_swing: float
    arm_out: float
    leg_swing: float
    occluder: str | None
    occ_pos: float
    occ_size: float
    light: float
    noise_seed: int


@dataclass
class Rendered:
    rgb: Image.Image | None
    thermal: Image.Image | None
    visible: tuple[str, ...]
    labels: np.ndarray  # (2H, 2W) uint8 label map


@dataclass
class ImageRecord:
    """One generated image: an RGB + thermal pair of the same scene with its captions."""

    pid: int  # 1-based identity id
    index: int  # 1-based image index within the identity
    name: str  # "<pid %04d>_<index %02d>"
    split: str
    view: str
    challenge: str
    scene: str
    rgb: Image.Image | None
    thermal: Image.Image | None  # mode "L"
    captions: list[str]
    no_color_captions: list[str]
    visible: tuple[str, ...]  # attributes visible in this render (hair, hat, upper, ...)
    identity: Identity
    spec: ViewSpec


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def _choice(rng: np.random.Generator, options: Sequence, weights=None):
    if isinstance(options, Mapping):
        weights = list(options.values())
        options = list(options)
    p = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        p = w / w.sum()
    return options[int(rng.choice(len(options), p=p))]


def _color_weights(favour: Mapping[str, float]) -> list[float]:
    rest = (1.0 - sum(favour.values())) / max(1, len(COLOR_NAMES) - len(favour))
    return [favour.get(c, rest) for c in COLOR_NAMES]


_UPPER_COLOR_W = _color_weights({"black": 0.13, "white": 0.13, "grey": 0.08})
_LOWER_COLOR_W = _color_weights(
    {"black": 0.22, "blue": 0.22, "grey": 0.14, "beige": 0.08, "brown": 0.07, "white": 0.05}
)
_SHOES_COLOR_W = _color_weights({"black": 0.34, "white": 0.3, "grey": 0.1, "brown": 0.12})
_CARRY_COLOR_W = _color_weights({"black": 0.3, "brown": 0.1, "grey": 0.08})


def make_identity(pid: int, seed: int = 0) -> Identity:
    """Draw the attributes of identity ``pid`` (1-based) for dataset seed ``seed``."""
    rng = _rng(seed, pid, 0)
    gender = _choice(rng, GENDERS)
    man = gender == "man"
    age = _choice(rng, AGES, [0.45, 0.35, 0.2])
    build = _choice(rng, BUILDS, [0.3, 0.5, 0.2])
    height = int(np.clip(rng.normal(176 if man else 163, 7 if man else 6), 148, 198))
    skin = int(rng.integers(len(SKIN_TONES)))
    if man:
        hair = _choice(
            rng, HAIR_STYLES, [0.8, 0.06, 0.14] if age == "young" else [0.68, 0.04, 0.28]
        )
    else:
        hair = _choice(rng, HAIR_STYLES, [0.3, 0.7, 0.0])
    if hair == "bald":
        hair_color = None
    elif age == "elderly":
        hair_color = _choice(rng, HAIR_COLOR_NAMES, [0.12, 0.1, 0.03, 0.45, 0.3])
    else:
        hair_color = _choice(rng, HAIR_COLOR_NAMES, [0.52, 0.3, 0.12, 0.04, 0.02])
    if man:
        upper = _choice(rng, UPPER_TYPES, [0.3, 0.25, 0.2, 0.25, 0.0])
    else:
        upper = _choice(rng, UPPER_TYPES, [0.22, 0.17, 0.2, 0.18, 0.23])
    upper_color = _choice(rng, COLOR_NAMES, _UPPER_COLOR_W)
    if upper == "dress":
        lower, lower_color = None, None
    else:
        lower = _choice(rng, LOWER_TYPES, [0.75, 0.25, 0.0] if man else [0.5, 0.15, 0.35])
        lower_color = _choice(rng, COLOR_NAMES, _LOWER_COLOR_W)
    shoes_color = _choice(rng, COLOR_NAMES, _SHOES_COLOR_W)
    carry_w = [0.3, 0.25, 0.05, 0.22, 0.18] if man else [0.25, 0.18, 0.25, 0.18, 0.14]
    carry = _choice(rng, (None,) + CARRY_TYPES, carry_w)
    carry_color = _choice(rng, COLOR_NAMES, _CARRY_COLOR_W) if carry else None
    hat = _choice(rng, (None,) + HAT_TYPES, [0.65, 0.2, 0.15])
    hat_color = _choice(rng, COLOR_NAMES) if hat else None
    return Identity(
        pid=int(pid),
        gender=gender,
        age=age,
        build=build,
        height_cm=height,
        skin_tone=skin,
        hair=hair,
        hair_color=hair_color,
        upper=upper,
        upper_color=upper_color,
        lower=lower,
        lower_color=lower_color,
        shoes_color=shoes_color,
        carry=carry,
        carry_color=carry_color,
        hat=hat,
        hat_color=hat_color,
    )


def sample_view(
    identity: Identity,
    index: int,
    seed: int = 0,
    *,
    challenge_weights: Mapping[str, float] | None = None,
    view_weights: Mapping[str, float] | None = None,
    stream: int = 0,
) -> ViewSpec:
    """Draw viewpoint, pose, framing, scene and challenge of image ``index`` of ``identity``.

    ``stream`` separates independent families of images of the same identity (e.g. the visible
    and the infrared camera images of a VI-ReID writer).
    """
    rng = _rng(seed, identity.pid, index, 1, stream)
    view = _choice(rng, dict(view_weights or DEFAULT_VIEW_WEIGHTS))
    challenge = _choice(rng, dict(challenge_weights or DEFAULT_CHALLENGE_WEIGHTS))
    scene = _choice(rng, SCENES)
    mirror = bool(rng.random() < 0.5)
    size = 0.8 + 0.12 * (identity.height_cm - 150) / 45.0
    scale = float(np.clip(size + rng.uniform(-0.03, 0.03), 0.74, 0.93))
    dx = float(rng.uniform(-0.06, 0.06))
    feet = float(rng.uniform(0.955, 0.99))
    arm_swing = float(rng.uniform(-32, 32))
    if identity.carry in ("handbag", "umbrella"):
        arm_swing *= 0.25
    arm_out = float(rng.uniform(4, 11))
    leg_swing = float(rng.uniform(-26, 26))
    occluder = _choice(rng, OCCLUDERS)
    occ_pos = float(rng.uniform(-1, 1))
    occ_size = float(rng.uniform(0, 1))
    light = float(rng.uniform(0.86, 1.1))
    noise_seed = int(rng.integers(0, 2**31 - 1))
    return ViewSpec(
        view=view,
        mirror=mirror,
        challenge=challenge,
        scene=scene,
        scale=scale,
        dx=dx,
        feet=feet,
        arm_swing=arm_swing,
        arm_out=arm_out,
        leg_swing=leg_swing,
        occluder=occluder if challenge == "occlusion" else None,
        occ_pos=occ_pos,
        occ_size=occ_size,
        light=light,
        noise_seed=noise_seed,
    )


def assign_splits(
    num_ids: int, seed: int = 0, ratios: Mapping[str, float] | None = None
) -> dict[int, str]:
    """Split pids ``1..num_ids`` by identity with a seeded permutation.

    ``ratios`` maps split name to fraction (default ``{"train": 0.7, "test": 0.3}``); split sizes
    are rounded cumulatively and every split gets at least one id when ``num_ids`` allows.
    """
    ratios = dict(ratios or {"train": 0.7, "test": 0.3})
    names = list(ratios)
    w = np.asarray([ratios[n] for n in names], dtype=np.float64)
    bounds = np.rint(np.cumsum(w) / w.sum() * num_ids).astype(int)
    sizes = np.diff(np.concatenate([[0], bounds]))
    if num_ids >= len(names):
        for i in range(len(sizes)):
            while sizes[i] == 0:
                j = int(np.argmax(sizes))
                sizes[j] -= 1
                sizes[i] += 1
    perm = _rng(seed, 7).permutation(num_ids) + 1
    out: dict[int, str] = {}
    start = 0
    for name, size in zip(names, sizes):
        for pid in perm[start : start + size]:
            out[int(pid)] = name
        start += size
    return out


# ----------------------------------------------------------------------------------------------
# Drawing helpers
# ----------------------------------------------------------------------------------------------


def _pt(p, angle_deg: float, length: float) -> tuple[float, float]:
    """Point ``length`` away from ``p``; angle 0 points down, positive angles towards +x."""
    a = math.radians(angle_deg)
    return (p[0] + length * math.sin(a), p[1] + length * math.cos(a))


def _lerp(p, q, t: float) -> tuple[float, float]:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


def _disc(d: ImageDraw.ImageDraw, p, r: float, label: int, ry: float | None = None) -> None:
    ry = r if ry is None else ry
    d.ellipse([p[0] - r, p[1] - ry, p[0] + r, p[1] + ry], fill=label)


def _limb(d: ImageDraw.ImageDraw, p0, p1, w0: float, w1: float, label: int) -> None:
    """A tapered segment from ``p0`` (width ``w0``) to ``p1`` (width ``w1``) with round ends."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    d.polygon(
        [
            (p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2),
            (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2),
            (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2),
        ],
        fill=label,
    )
    _disc(d, p0, w0 / 2, label)
    _disc(d, p1, w1 / 2, label)


def _rect(d: ImageDraw.ImageDraw, x0, y0, x1, y1, label: int, radius: float = 0.0) -> None:
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    if radius > 0.5:
        d.rounded_rectangle([x0, y0, x1, y1], radius=radius, fill=label)
    else:
        d.rectangle([x0, y0, x1, y1], fill=label)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise in [-1, 1] of shape (h, w)."""
    small = rng.uniform(-1, 1, size=cells).astype(np.float32)
    return np.asarray(
        Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC), np.float32
    )


def _down2(a: np.ndarray) -> np.ndarray:
    """2x2 box downsampling over the first two axes."""
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) * 0.25


_VIGNETTES: dict[tuple[int, int], np.ndarray] = {}


def _vignette(h: int, w: int) -> np.ndarray:
    """Thermal-camera vignetting (grey levels to subtract), cached per size."""
    if (h, w) not in _VIGNETTES:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        _VIGNETTES[(h, w)] = 20.0 * ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2)
    return _VIGNETTES[(h, w)]


def _blur3(a: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur over the first two axes (edge padded)."""
    p = np.pad(a, [(1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 2), mode="edge")
    v = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    return 0.25 * v[:, :-2] + 0.5 * v[:, 1:-1] + 0.25 * v[:, 2:]


# ----------------------------------------------------------------------------------------------
# Background scenes
# ----------------------------------------------------------------------------------------------


class _Luts:
    """Per-render label -> RGB colour, temperature and texture-noise amplitude."""

    def __init__(self) -> None:
        self.rgb = np.zeros((_N_LABELS, 3), np.float32)
        self.temp = np.full(_N_LABELS, 90.0, np.float32)
        self.tex = np.full(_N_LABELS, 4.0, np.float32)

    def set(self, label: int, rgb, temp: float, tex: float = 4.0) -> None:
        self.rgb[label] = rgb
        self.temp[label] = temp
        self.tex[label] = tex


def _jit(rng: np.random.Generator, rgb, amount: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _scene_street(d, rng, H, W, lut: _Luts) -> int:
    h = H * rng.uniform(0.44, 0.62)
    _rect(d, 0, 0, W, h, L_WALL)
    win_w, win_h = W * rng.uniform(0.2, 0.34), H * rng.uniform(0.09, 0.16)
    gap_x, gap_y = win_w * rng.uniform(0.4, 0.9), win_h * rng.uniform(0.4, 0.8)
    frame = max(1.0, W * 0.015)
    y = -rng.uniform(0, win_h + gap_y)
    x_start = -rng.uniform(0, win_w + gap_x)
    while y < h:
        x = x_start
        while x < W:
            _rect(d, x - frame, y - frame, x + win_w + frame, y + win_h + frame, L_FRAME)
            _rect(d, x, y, x + win_w, y + win_h, L_WINDOW)
            x += win_w + gap_x
        y += win_h + gap_y
    curb = h + H * 0.03
    _rect(d, 0, h, W, curb, L_CURB)
    _rect(d, 0, curb, W, H, L_GROUND)
    if rng.random() < 0.5:  # zebra crossing
        sh = H * rng.uniform(0.025, 0.04)
        y = curb + rng.uniform(0.02, 0.08) * H
        while y < H:
            _rect(d, 0, y, W, y + sh, L_MARK)
            y += 2.2 * sh
    else:  # a lane line in perspective
        x0 = W * rng.uniform(0.1, 0.9)
        d.polygon([(x0 - 2, curb), (x0 + 2, curb), (x0 + W * 0.25, H), (x0 + W * 0.1, H)], L_MARK)
    walls = [(206, 194, 170), (172, 172, 176), (158, 92, 72), (186, 198, 210), (122, 126, 136)]
    lut.set(L_WALL, _jit(rng, walls[int(rng.integers(len(walls)))]), 96, 5)
    lut.set(L_WINDOW, _jit(rng, (78, 96, 118), 20), 76, 6)
    lut.set(L_FRAME, _jit(rng, (200, 200, 196), 20), 92, 3)
    lut.set(L_CURB, _jit(rng, (170, 168, 160)), 100, 6)
    lut.set(L_GROUND, _jit(rng, (98, 98, 102), 15), 106, 9)
    lut.set(L_MARK, _jit(rng, (226, 226, 220), 10), 100, 5)
    return L_GROUND


def _scene_grass(d, rng, H, W, lut: _Luts) -> int:
    h = H * rng.uniform(0.42, 0.6)
    h1 = H * rng.uniform(0.06, 0.22)
    _rect(d, 0, 0, W, h, L_SKY)
    for _ in range(int(rng.integers(1, 4))):
        x = W * rng.uniform(0, 1)
        _rect(d, x - W * 0.04, h1, x + W * 0.04, h, L_TRUNK)
        r = W * rng.uniform(0.25, 0.5)
        _disc(d, (x, h1 + r * 0.3), r, L_FOLIAGE, r * rng.uniform(0.6, 1.0))
    x = -W * 0.1
    while x < W * 1.1:  # a hedge along the horizon
        r = W * rng.uniform(0.1, 0.22)
        _disc(d, (x, h - r * 0.3), r, L_FOLIAGE)
        x += r * 1.3
    _rect(d, 0, h, W, H, L_GRASS)
    if rng.random() < 0.5:  # a path
        x0 = W * rng.uniform(0.2, 0.8)
        d.polygon(
            [(x0 - W * 0.05, h), (x0 + W * 0.05, h), (x0 + W * 0.6, H), (x0 - W * 0.6, H)], L_GROUND
        )
    lut.set(L_SKY, _jit(rng, (176, 200, 228), 18), 34, 3)
    lut.set(L_FOLIAGE, _jit(rng, (46, 92, 40), 12), 72, 22)
    lut.set(L_TRUNK, _jit(rng, (86, 64, 44), 10), 82, 10)
    lut.set(L_GRASS, _jit(rng, (84, 142, 58), 15), 78, 20)
    lut.set(L_GROUND, _jit(rng, (168, 150, 120), 15), 96, 10)
    return L_GRASS


def _scene_wall(d, rng, H, W, lut: _Luts) -> int:
    h = H * rng.uniform(0.62, 0.82)
    _rect(d, 0, 0, W, h, L_MORTAR)
    bh = H * rng.uniform(0.028, 0.045)
    bw = bh * rng.uniform(2.0, 2.6)
    m = max(1.0, bh * 0.14)
    phase = rng.uniform(0, bw)
    for row in range(int(h / bh) + 1):
        y = row * bh
        x = -phase - (row % 2) * bw / 2
        while x < W:
            _rect(d, x + m / 2, y + m / 2, x + bw - m / 2, min(y + bh - m / 2, h), L_BRICK)
            x += bw
    _rect(d, 0, h, W, H, L_GROUND)
    tile = W * rng.uniform(0.25, 0.4)
    y = h + tile * 0.4
    while y < H:
        _rect(d, 0, y, W, y + m, L_CURB)
        y += tile * 0.5
    if rng.random() < 0.6:
        lut.set(L_BRICK, _jit(rng, (160, 76, 54), 18), 96, 10)
        lut.set(L_MORTAR, _jit(rng, (190, 182, 170), 10), 92, 5)
    else:  # painted brick
        base = _jit(rng, (200, 196, 184), 30)
        lut.set(L_BRICK, base, 95, 6)
        lut.set(L_MORTAR, base * 0.82, 93, 4)
    lut.set(L_GROUND, _jit(rng, (164, 160, 150), 14), 100, 7)
    lut.set(L_CURB, lut.rgb[L_GROUND] * 0.75, 98, 4)
    return L_GROUND


def _scene_indoor(d, rng, H, W, lut: _Luts) -> int:
    h = H * rng.uniform(0.55, 0.75)
    _rect(d, 0, 0, W, h, L_WALL)
    dw = W * rng.uniform(0.3, 0.45)
    dx0 = W * rng.uniform(-0.1, 0.75)
    _rect(d, dx0 - W * 0.03, H * 0.08 - W * 0.03, dx0 + dw + W * 0.03, h, L_FRAME)
    _rect(d, dx0, H * 0.08, dx0 + dw, h, L_DOOR)
    if rng.random() < 0.6:
        _disc(d, (W * rng.uniform(0.15, 0.85), H * 0.02), W * 0.16, L_LAMP, H * 0.025)
    _rect(d, 0, h - H * 0.02, W, h, L_BASEBOARD)
    tile = W * rng.uniform(0.18, 0.32)
    row, y = 0, h
    while y < H:
        th = tile * (0.35 + 0.25 * (y - h) / max(1.0, H - h))
        col, x = 0, -rng.uniform(0, tile)
        while x < W:
            _rect(d, x, y, x + tile, y + th, L_FLOOR_A if (row + col) % 2 else L_FLOOR_B)
            x += tile
            col += 1
        y += th
        row += 1
    walls = [(230, 224, 206), (206, 222, 230), (226, 210, 214), (214, 224, 204), (236, 236, 232)]
    lut.set(L_WALL, _jit(rng, walls[int(rng.integers(len(walls)))], 8), 90, 3)
    lut.set(L_FRAME, _jit(rng, (236, 236, 232), 8), 88, 2)
    lut.set(L_DOOR, _jit(rng, (126, 86, 54), 25), 86, 6)
    lut.set(L_LAMP, (255, 252, 236), 176, 1)
    lut.set(L_BASEBOARD, _jit(rng, (96, 86, 76), 15), 88, 3)
    fa = _jit(rng, (196, 186, 164), 25)
    lut.set(L_FLOOR_A, fa, 92, 4)
    lut.set(L_FLOOR_B, fa * rng.uniform(0.55, 0.8), 91, 4)
    return L_FLOOR_A


_SCENES = {
    "street": _scene_street,
    "grass": _scene_grass,
    "wall": _scene_wall,
    "indoor": _scene_indoor,
}


# ----------------------------------------------------------------------------------------------
# The person
# ----------------------------------------------------------------------------------------------


def _draw_person(d, ident: Identity, spec: ViewSpec, cx: float, fy: float, S: float) -> None:
    """Draw the person into the label map; ``S`` = figure height, ``fy`` = sole line."""
    man = ident.gender == "man"
    bm = BUILD_SCALE[ident.build]
    heavy = ident.build == "heavy"
    view = spec.view
    side, front, back = view == "side", view == "front", view == "back"
    up, low = ident.upper, ident.lower

    def Y(f: float) -> float:
        return fy - S * (1.0 - f)

    bulk = {"coat": 1.12, "jacket": 1.07}.get(up, 1.0)
    if side:
        sw = 0.074 * S * bm * bulk
        ww = 0.068 * S * bm * bulk * (1.15 if heavy else 1.0)
        hw = 0.072 * S * bm * bulk
    else:
        sw = (0.124 if man else 0.106) * S * bm * bulk
        ww = (0.09 if man else 0.076) * S * bm * bulk * (1.1 if heavy else 1.0)
        hw = (0.096 if man else 0.106) * S * bm * bulk
    hr = (0.052 if side else (0.048 if man else 0.045)) * S
    hcx = cx + (0.014 * S if side else 0.0)
    head_box = [hcx - hr, Y(0.0), hcx + hr, Y(0.128)]
    long_sleeves = up in ("shirt", "jacket", "coat")

    # --- legs -----------------------------------------------------------------------------
    lw0 = 0.078 * S * bm * (1.08 if heavy else 1.0)
    lw1 = 0.044 * S * max(bm, 0.95)
    legs = []  # (hip, knee, ankle, near)
    if side:
        hip = (cx - 0.005 * S, Y(0.5))
        th = spec.leg_swing
        geo = []
        for ang, near in ((-th, False), (th, True)):
            shin = ang - (16.0 if ang < 0 else 4.0)
            geo.append((ang, shin, near))
        drop = max(
            0.235 * math.cos(math.radians(a)) + 0.225 * math.cos(math.radians(s)) for a, s, _ in geo
        )
        k = 0.455 / drop * S
        for ang, shin, near in geo:
            knee = _pt(hip, ang, 0.235 * k)
            legs.append((hip, knee, _pt(knee, shin, 0.225 * k), near))
    else:
        spread = 2.0 + abs(spec.leg_swing) * 0.2
        lift = 0.025 * S * abs(spec.leg_swing) / 26.0
        step_side = 1 if spec.leg_swing > 0 else -1
        for s in (-1, 1):
            hip = (cx + s * min(0.048 * S * bm, hw - 0.03 * S), Y(0.5))
            ay = Y(0.955) - (lift if s == step_side else 0.0)
            ax = hip[0] + s * math.tan(math.radians(spread)) * (ay - hip[1])
            legs.append((hip, _lerp(hip, (ax, ay), 0.5), (ax, ay), True))

    def draw_leg(hip, knee, ankle, near):
        skin_l = L_SKIN if near else L_SKIN_SHADE
        low_l = L_LOWER if near else L_LOWER_SHADE
        wk = (lw0 + lw1) / 2
        if low == "trousers":
            _limb(d, hip, knee, lw0, wk, low_l)
            _limb(d, knee, ankle, wk, lw1 * 1.1, low_l)
        else:
            _limb(d, hip, knee, lw0 * 0.92, wk * 0.88, skin_l)
            _limb(d, knee, ankle, wk * 0.88, lw1 * 0.9, skin_l)
            if low == "shorts":
                _limb(d, hip, _lerp(hip, knee, 0.62), lw0 * 1.08, lw0 * 1.02, low_l)
        ax, ay = ankle
        if side:
            d.ellipse([ax - 0.03 * S, ay - 0.012 * S, ax + 0.075 * S, ay + 0.042 * S], fill=L_SHOES)
        else:
            d.ellipse(
                [ax - 0.036 * S, ay - 0.008 * S, ax + 0.036 * S, ay + 0.042 * S], fill=L_SHOES
            )

    # --- arms -----------------------------------------------------------------------------
    def draw_arm(sh, a_up, a_fore, near):
        sleeve = L_UPPER if near else L_UPPER_SHADE
        skin_l = L_SKIN if near else L_SKIN_SHADE
        w0 = 0.056 * S * bm * bulk
        w1 = 0.046 * S * bm * bulk
        w2 = 0.038 * S * max(bm, 0.95) * bulk
        elbow = _pt(sh, a_up, 0.2 * S)
        wrist = _pt(elbow, a_fore, 0.17 * S)
        if long_sleeves:
            _limb(d, sh, elbow, w0, w1, sleeve)
            _limb(d, elbow, wrist, w1, w2, sleeve)
        else:
            _limb(d, sh, elbow, w0 * 0.82, w1 * 0.82, skin_l)
            _limb(d, elbow, wrist, w1 * 0.82, w2 * 0.82, skin_l)
            _limb(d, sh, _lerp(sh, elbow, 0.5), w0 * 1.05, w0, sleeve)
        hand = _pt(wrist, a_fore, 0.022 * S)
        _disc(d, hand, 0.024 * S, skin_l)
        return hand

    if side:
        shoulder = (cx - 0.01 * S, Y(0.18))
        bend = 12.0 + abs(spec.arm_swing) * 0.3
        a = spec.arm_swing
    else:
        sx = sw - 0.03 * S
        shoulders = [(cx - sx, Y(0.178)), (cx + sx, Y(0.178))]
        outs = [spec.arm_out + spec.arm_swing * 0.08, spec.arm_out - spec.arm_swing * 0.08]

    # --- far side (side view) and long hair behind the back (front view) -------------------
    if front and ident.hair == "long":
        _rect(d, hcx - hr - 0.014 * S, Y(0.01), hcx + hr + 0.014 * S, Y(0.27), L_HAIR, 0.03 * S)
    if side:
        draw_arm(shoulder, -a, -a + bend, near=False)
    for leg in legs:
        if not leg[3]:
            draw_leg(*leg)
    for leg in legs:
        if leg[3]:
            draw_leg(*leg)

    # --- hips, skirt --------------------------------------------------------------------
    if low in ("trousers", "shorts"):
        if side:
            _rect(d, cx - hw, Y(0.44), cx + hw, Y(0.56), L_LOWER)
        else:
            d.polygon(
                [
                    (cx - ww, Y(0.44)),
                    (cx + ww, Y(0.44)),
                    (cx + hw, Y(0.5)),
                    (cx + hw * 0.8, Y(0.565)),
                    (cx - hw * 0.8, Y(0.565)),
                    (cx - hw, Y(0.5)),
                ],
                fill=L_LOWER,
            )
    elif low == "skirt":
        if side:
            pts = [
                (cx - ww, Y(0.43)),
                (cx + ww, Y(0.43)),
                (cx + hw * 1.6, Y(0.67)),
                (cx - hw * 1.3, Y(0.67)),
            ]
        else:
            pts = [
                (cx - ww, Y(0.43)),
                (cx + ww, Y(0.43)),
                (cx + hw * 1.45, Y(0.67)),
                (cx - hw * 1.45, Y(0.67)),
            ]
        d.polygon(pts, fill=L_LOWER)

    # --- backpack seen from the side: behind the back --------------------------------------
    if side and ident.carry == "backpack":
        _rect(d, cx - sw - 0.1 * S, Y(0.185), cx - sw + 0.02 * S, Y(0.45), L_BAG, 0.025 * S)

    # --- neck and torso -------------------------------------------------------------------
    _rect(d, hcx - 0.024 * S, Y(0.1), hcx + 0.024 * S, Y(0.17), L_SKIN)
    if up == "coat":
        bottom, bw = Y(0.74), hw * 1.25
    elif up == "dress":
        bottom, bw = Y(0.69), hw * 1.5
    elif up == "jacket":
        bottom, bw = Y(0.535), hw * 1.02
    else:
        bottom, bw = Y(0.505), hw
    belly = 1.18 if heavy else 1.0
    if side:
        torso = [
            (cx - sw * 0.95, Y(0.155)),
            (cx + sw * 0.55, Y(0.15)),
            (cx + sw * 1.05, Y(0.24)),
            (cx + ww * belly, Y(0.40)),
            (cx + hw, Y(0.5)),
            (cx + bw, bottom),
            (cx - bw * 0.95, bottom),
            (cx - hw, Y(0.5)),
            (cx - ww, Y(0.4)),
            (cx - sw * 1.02, Y(0.25)),
        ]
    else:
        torso = [
            (cx - sw * 0.45, Y(0.148)),
            (cx + sw * 0.45, Y(0.148)),
            (cx + sw, Y(0.175)),
            (cx + sw * 0.98, Y(0.25)),
            (cx + ww * belly, Y(0.43)),
            (cx + hw, Y(0.5)),
            (cx + bw, bottom),
            (cx - bw, bottom),
            (cx - hw, Y(0.5)),
            (cx - ww * belly, Y(0.43)),
            (cx - sw * 0.98, Y(0.25)),
            (cx - sw, Y(0.175)),
        ]
    d.polygon(torso, fill=L_UPPER)
    line_w = max(1, int(round(0.012 * S)))
    if front:
        if up in ("t-shirt", "dress"):
            d.chord([cx - 0.034 * S, Y(0.128), cx + 0.034 * S, Y(0.172)], 0, 180, fill=L_SKIN)
        elif up == "shirt":
            d.polygon(
                [(cx - 0.022 * S, Y(0.148)), (cx + 0.022 * S, Y(0.148)), (cx, Y(0.19))], L_SKIN
            )
            for s in (-1, 1):
                d.polygon(
                    [
                        (cx + s * 0.036 * S, Y(0.145)),
                        (cx + s * 0.003 * S, Y(0.19)),
                        (cx + s * 0.034 * S, Y(0.205)),
                    ],
                    L_UPPER_DETAIL,
                )
            d.line([(cx, Y(0.19)), (cx, bottom)], fill=L_UPPER_DETAIL, width=line_w)
        elif up == "jacket":
            d.chord([cx - 0.04 * S, Y(0.13), cx + 0.04 * S, Y(0.18)], 0, 180, fill=L_UPPER_DETAIL)
            d.line([(cx, Y(0.17)), (cx, bottom)], fill=L_UPPER_DETAIL, width=line_w)
            for s in (-1, 1):
                _rect(d, cx + s * 0.03 * S, Y(0.44), cx + s * 0.07 * S, Y(0.455), L_UPPER_DETAIL)
        elif up == "coat":
            for s in (-1, 1):
                d.polygon(
                    [(cx + s * 0.045 * S, Y(0.148)), (cx, Y(0.31)), (cx + s * 0.075 * S, Y(0.22))],
                    L_UPPER_DETAIL,
                )
            d.line([(cx, Y(0.3)), (cx, bottom)], fill=L_UPPER_DETAIL, width=line_w)
            _rect(d, cx - ww * 1.02, Y(0.43), cx + ww * 1.02, Y(0.45), L_UPPER_DETAIL)
    elif back:
        if up == "coat":
            d.line([(cx, Y(0.55)), (cx, bottom)], fill=L_UPPER_DETAIL, width=line_w)
            _rect(d, cx - ww * 1.02, Y(0.43), cx + ww * 1.02, Y(0.45), L_UPPER_DETAIL)
        elif up == "jacket":
            _rect(d, cx - hw, bottom - 0.025 * S, cx + hw, bottom, L_UPPER_DETAIL)
    elif up in ("coat", "jacket"):
        d.line(
            [(cx + sw * 0.9, Y(0.2)), (cx + bw * 0.75, bottom)], fill=L_UPPER_DETAIL, width=line_w
        )

    # --- backpack from behind, straps ---------------------------------------------------------
    if ident.carry == "backpack":
        if back:
            _rect(d, cx - sw * 0.72, Y(0.19), cx + sw * 0.72, Y(0.45), L_BAG, 0.03 * S)
            _rect(d, cx - sw * 0.5, Y(0.35), cx + sw * 0.5, Y(0.44), L_STRAP, 0.015 * S)
        elif front:
            for s in (-1, 1):
                _limb(
                    d,
                    (cx + s * sw * 0.55, Y(0.16)),
                    (cx + s * sw * 0.62, Y(0.34)),
                    0.026 * S,
                    0.024 * S,
                    L_STRAP,
                )
        else:
            _limb(
                d,
                (cx - sw * 0.5, Y(0.16)),
                (cx + sw * 0.55, Y(0.31)),
                0.022 * S,
                0.022 * S,
                L_STRAP,
            )

    # --- near arms ------------------------------------------------------------------------
    if side:
        hands = [draw_arm(shoulder, a, a + bend, near=True)]
    else:
        hands = [
            draw_arm(shoulders[0], -outs[0], -outs[0] + 5.0, True),
            draw_arm(shoulders[1], outs[1], outs[1] - 5.0, True),
        ]

    # --- head, hair, face, hat --------------------------------------------------------------
    hair = ident.hair
    big = [head_box[0] - 0.007 * S, head_box[1] - 0.008 * S, head_box[2] + 0.007 * S, head_box[3]]
    if front:
        if hair == "bald":
            d.ellipse(head_box, fill=L_HEADSKIN)
            if ident.age != "young":
                for s in (-1, 1):
                    _disc(d, (hcx + s * hr * 0.92, Y(0.065)), 0.014 * S, L_HAIR, 0.02 * S)
        else:
            d.ellipse(big, fill=L_HAIR)
            d.ellipse(
                [hcx - hr + 0.004 * S, Y(0.03), hcx + hr - 0.004 * S, Y(0.128)], fill=L_HEADSKIN
            )
        for s in (-1, 1):
            _disc(d, (hcx + s * 0.021 * S, Y(0.064)), 0.0075 * S, L_EYE)
    elif back:
        d.ellipse(head_box, fill=L_HEADSKIN)
        if hair == "short":
            d.chord(big, 150, 30, fill=L_HAIR)
        elif hair == "long":
            d.ellipse(big, fill=L_HAIR)
            _rect(d, hcx - hr - 0.012 * S, Y(0.05), hcx + hr + 0.012 * S, Y(0.28), L_HAIR, 0.03 * S)
        elif ident.age != "young":
            d.chord(head_box, 20, 160, fill=L_HAIR)
            d.chord(head_box, 40, 140, fill=L_HEADSKIN)
    else:
        if hair == "bald":
            d.ellipse(head_box, fill=L_HEADSKIN)
            if ident.age != "young":
                _disc(d, (hcx - hr * 0.6, Y(0.075)), 0.018 * S, L_HAIR, 0.022 * S)
        else:
            d.ellipse(big, fill=L_HAIR)
            d.ellipse([hcx - hr * 0.3, Y(0.032), hcx + hr + 0.002 * S, Y(0.128)], fill=L_HEADSKIN)
            if hair == "long":
                _rect(d, hcx - hr - 0.008 * S, Y(0.04), hcx - 0.004 * S, Y(0.26), L_HAIR, 0.02 * S)
        _disc(d, (hcx + hr + 0.003 * S, Y(0.076)), 0.011 * S, L_HEADSKIN)
        _disc(d, (hcx + hr * 0.55, Y(0.062)), 0.0075 * S, L_EYE)
    if ident.hat == "cap":
        d.chord([big[0] - 0.002 * S, Y(-0.014), big[2] + 0.002 * S, Y(0.09)], 180, 360, fill=L_HAT)
        if front:
            d.ellipse([hcx - hr - 0.006 * S, Y(0.028), hcx + hr + 0.006 * S, Y(0.05)], fill=L_HAT)
        elif side:
            d.polygon(
                [
                    (hcx + hr * 0.5, Y(0.03)),
                    (hcx + hr + 0.065 * S, Y(0.04)),
                    (hcx + hr + 0.06 * S, Y(0.052)),
                    (hcx + hr * 0.5, Y(0.046)),
                ],
                L_HAT,
            )
    elif ident.hat == "hat":
        _rect(d, hcx - hr - 0.003 * S, Y(-0.04), hcx + hr + 0.003 * S, Y(0.035), L_HAT, 0.02 * S)
        d.ellipse([hcx - hr * 1.8, Y(0.018), hcx + hr * 1.8, Y(0.046)], fill=L_HAT)

    # --- carried items in front of the body ------------------------------------------------
    hand = hands[-1]
    if ident.carry == "handbag":
        hx, hy = hand
        for s in (-1, 1):
            _limb(d, (hx + s * 0.03 * S, hy + 0.04 * S), (hx, hy), 0.012 * S, 0.012 * S, L_STRAP)
        _rect(d, hx - 0.05 * S, hy + 0.035 * S, hx + 0.05 * S, hy + 0.115 * S, L_BAG, 0.012 * S)
    elif ident.carry == "shoulder bag":
        if side:
            a0, bx = (cx + sw * 0.2, Y(0.155)), cx - 0.01 * S
        else:
            s = 1 if front else -1
            a0, bx = (cx - s * sw * 0.62, Y(0.158)), cx + s * (hw + 0.022 * S)
        _limb(d, a0, (bx, Y(0.49)), 0.017 * S, 0.017 * S, L_STRAP)
        _rect(d, bx - 0.048 * S, Y(0.47), bx + 0.048 * S, Y(0.56), L_BAG, 0.01 * S)
    elif ident.carry == "umbrella":
        hx, hy = hand
        top = (hx, hy + 0.03 * S)
        tip = (hx + 0.05 * S, fy - 0.045 * S)
        dxu, dyu = tip[0] - top[0], tip[1] - top[1]
        n = math.hypot(dxu, dyu) or 1.0
        nx, ny = -dyu / n * 0.03 * S, dxu / n * 0.03 * S
        mid = _lerp(top, tip, 0.3)
        _limb(d, (hx - 0.012 * S, hy - 0.02 * S), top, 0.012 * S, 0.012 * S, L_HANDLE)
        d.polygon([top, (mid[0] + nx, mid[1] + ny), tip, (mid[0] - nx, mid[1] - ny)], L_BAG)
        _limb(d, tip, (tip[0] + 0.004 * S, fy), 0.01 * S, 0.008 * S, L_HANDLE)


def _draw_occluder(d, rng, kind: str, spec: ViewSpec, cx, fy, S, H, W, lut: _Luts) -> None:
    pos, size = spec.occ_pos, spec.occ_size
    if kind == "pole":
        w = W * (0.1 + 0.08 * size)
        x = cx + pos * 0.14 * W - w / 2
        _rect(d, x, 0, x + w, H, L_OCC_A)
        if rng.random() < 0.5:
            _rect(d, x - w * 0.8, H * 0.05, x + w * 1.8, H * 0.05 + w * 1.6, L_OCC_B, w * 0.2)
        lut.set(L_OCC_A, _jit(rng, (140, 142, 146), 25), 58, 5)
        lut.set(L_OCC_B, _jit(rng, PALETTE[_choice(rng, ("blue", "red", "green", "white"))]), 66, 3)
    elif kind == "car":
        top = fy - S * (0.28 + 0.2 * size)
        left = W * (-0.35 + 0.2 * pos)
        right = left + W * 1.5
        _rect(d, left + W * 0.2, top, right - W * 0.3, top + 0.16 * S, L_OCC_B, 0.04 * S)
        _rect(d, left, top + 0.12 * S, right, H + 10, L_OCC_A, 0.05 * S)
        for wx in (left + W * 0.3, right - W * 0.3):
            _disc(d, (wx, H), 0.1 * S, L_OCC_C)
        lut.set(L_OCC_A, _jit(rng, PALETTE[_choice(rng, COLOR_NAMES)], 15), 114, 6)
        lut.set(L_OCC_B, _jit(rng, (52, 62, 76), 10), 86, 4)
        lut.set(L_OCC_C, (30, 30, 32), 124, 3)
    elif kind == "box":
        w = W * (0.45 + 0.3 * size)
        h = S * (0.24 + 0.2 * size)
        x0 = cx + (0.05 + 0.25 * abs(pos)) * W * (1 if pos >= 0 else -1) - w / 2
        _rect(d, x0, fy + 0.02 * S - h, x0 + w, H + 5, L_OCC_A, 0.01 * S)
        _rect(d, x0 - 0.01 * W, fy + 0.02 * S - h, x0 + w + 0.01 * W, fy + 0.06 * S - h, L_OCC_B)
        colors = [(124, 88, 52), (46, 104, 60), (48, 72, 140), (96, 98, 102)]
        lut.set(L_OCC_A, _jit(rng, colors[int(rng.integers(len(colors)))]), 78, 6)
        lut.set(L_OCC_B, lut.rgb[L_OCC_A] * 0.7, 74, 4)
    else:  # board: a sign or another object in front of the upper body
        w = W * (0.45 + 0.3 * size)
        h = S * (0.2 + 0.15 * size)
        bxc = cx + (0.18 + 0.2 * abs(pos)) * W * (1 if pos >= 0 else -1)
        byc = fy - S * (0.55 + 0.2 * size)
        _rect(d, bxc - w / 2, byc - h / 2, bxc + w / 2, byc + h / 2, L_OCC_B, 0.01 * S)
        m = 0.02 * S
        _rect(d, bxc - w / 2 + m, byc - h / 2 + m, bxc + w / 2 - m, byc + h / 2 - m, L_OCC_A)
        _rect(d, bxc - 0.015 * S, byc + h / 2, bxc + 0.015 * S, H, L_OCC_B)
        colors = [(236, 236, 230), (232, 200, 40), (40, 80, 170), (200, 50, 40)]
        lut.set(L_OCC_A, _jit(rng, colors[int(rng.integers(len(colors)))], 10), 72, 3)
        lut.set(L_OCC_B, _jit(rng, (70, 72, 76), 10), 68, 3)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _lum(rgb) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def _detail_color(rgb: np.ndarray) -> np.ndarray:
    return rgb * 0.62 if _lum(rgb) > 70 else np.clip(rgb * 1.6 + 40, 0, 255)


def _person_luts(ident: Identity, lut: _Luts, rng: np.random.Generator, toffset: float) -> None:
    def col(name, jitter=10.0):
        return _jit(rng, PALETTE[name], jitter) if name else np.zeros(3, np.float32)

    def warm(name):  # dark fabric is a little warmer
        return 0.0 if name is None else 6.0 * (0.5 - _lum(PALETTE[name]) / 255.0)

    skin = _jit(rng, SKIN_TONES[ident.skin_tone], 6)
    t = toffset
    lut.set(L_SKIN, skin, 222 + t, 3)
    lut.set(L_HEADSKIN, skin, 226 + t, 3)
    lut.set(L_SKIN_SHADE, skin * 0.78, 216 + t, 3)
    lut.set(L_EYE, (40, 30, 28), 206 + t, 1)
    hair_name = ident.hair_color or ("grey" if ident.age == "elderly" else "black")
    lut.set(L_HAIR, _jit(rng, HAIR_RGB[hair_name], 8), 150 + t, 10)
    upper = col(ident.upper_color)
    ut = _UPPER_TEMP[ident.upper] + t + warm(ident.upper_color)
    lut.set(L_UPPER, upper, ut, 5)
    lut.set(L_UPPER_SHADE, upper * 0.75, ut - 6, 5)
    lut.set(L_UPPER_DETAIL, _detail_color(upper), ut - 4, 3)
    lower = col(ident.lower_color)
    lt = _LOWER_TEMP.get(ident.lower or "", 170.0) + t + warm(ident.lower_color)
    lut.set(L_LOWER, lower, lt, 6)
    lut.set(L_LOWER_SHADE, lower * 0.75, lt - 6, 6)
    lut.set(L_SHOES, col(ident.shoes_color, 8), 112 + t + warm(ident.shoes_color), 4)
    hat = col(ident.hat_color)
    lut.set(L_HAT, hat, (140 if ident.hat == "cap" else 128) + t + warm(ident.hat_color), 4)
    bag = col(ident.carry_color)
    bag_t = 78.0 if ident.carry == "umbrella" else 84.0
    lut.set(L_BAG, bag, bag_t + warm(ident.carry_color), 5)
    lut.set(L_STRAP, bag * 0.78, 96 + t * 0.5, 3)
    lut.set(L_HANDLE, (40, 40, 42), 90, 2)


def _apply_challenge(img: np.ndarray, challenge: str, rng: np.random.Generator) -> np.ndarray:
    H, W, _ = img.shape
    if challenge == "low_light":
        img = img * rng.uniform(0.16, 0.26)
        g = img.mean(axis=2, keepdims=True)
        img = g + (img - g) * 0.3
        img = _blur3(img + rng.normal(0, 5.0, (H, W, 1)) + rng.normal(0, 2.0, (H, W, 3)))
        img = img + rng.normal(0, 2.0, (H, W, 1))
    elif challenge == "darkness":
        img = img * rng.uniform(0.035, 0.065)
        g = img.mean(axis=2, keepdims=True)
        img = g + (img - g) * 0.12
        img = img + np.abs(rng.normal(0, 2.5, (H, W, 1)))
    elif challenge == "strong_light":
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        bx, by = W * rng.uniform(0.0, 1.0), H * rng.uniform(0.0, 0.5)
        r = H * rng.uniform(0.14, 0.3)
        bloom = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * r * r))[..., None]
        gain = rng.uniform(1.1, 1.3)
        img = img * gain * (1 - 0.4 * bloom) + 260.0 * bloom
        img = 0.85 * img + 35.0  # washed-out contrast
    elif challenge == "abnormal_illumination":
        tints = [(1.4, 0.85, 0.45), (0.5, 0.8, 1.45), (0.6, 1.3, 0.6), (1.3, 0.55, 1.25)]
        tint = np.asarray(tints[int(rng.integers(len(tints)))], np.float32)
        tint = tint * rng.uniform(0.9, 1.1, 3)
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        t = (xx / W - 0.5) * math.cos(ang) + (yy / H - 0.5) * math.sin(ang)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        lo, hi = rng.uniform(0.2, 0.45), rng.uniform(1.1, 1.4)
        img = img * tint * (lo + (hi - lo) * t)[..., None]
    return img


def render(
    identity: Identity,
    spec: ViewSpec,
    height: int = 128,
    width: int = 64,
    modalities: Iterable[str] = ("rgb", "thermal"),
) -> Rendered:
    """Render one view of ``identity``: RGB and thermal images of the same scene geometry.

    The thermal image depends on the garment *types* (thickness), not on their colours (apart
    from a +-3 grey-level warmth of dark fabric), and not on the lighting challenge.
    """
    modalities = set(modalities)
    H, W = height * _SS, width * _SS
    rng_geo = _rng(spec.noise_seed, 0)
    rng_rgb = _rng(spec.noise_seed, 1)
    rng_t = _rng(spec.noise_seed, 2)
    rng_ch = _rng(spec.noise_seed, 3)

    lab = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(lab)
    lut = _Luts()
    floor_label = _SCENES[spec.scene](d, rng_geo, H, W, lut)
    lut.set(
        L_SHADOW, lut.rgb[floor_label] * 0.6, lut.temp[floor_label] - 4, lut.tex[floor_label] * 0.6
    )

    S = spec.scale * min(H, 2.0 * W)
    fy = H * spec.feet
    cx = W / 2 + spec.dx * W
    d.ellipse([cx - 0.17 * S, fy - 0.018 * S, cx + 0.2 * S, fy + 0.022 * S], fill=L_SHADOW)
    toffset = float(rng_t.uniform(-5, 5))
    _person_luts(identity, lut, rng_rgb, toffset)
    _draw_person(d, identity, spec, cx, fy, S)
    if spec.occluder:
        _draw_occluder(d, rng_geo, spec.occluder, spec, cx, fy, S, H, W, lut)
    labels = np.asarray(lab)
    if spec.mirror:
        labels = np.ascontiguousarray(labels[:, ::-1])
        cx = W - cx
    person = (labels >= _PERSON_LO) & (labels < _PERSON_HI)
    xs = np.arange(W, dtype=np.float32) + 0.5
    cyl = np.clip(((xs - cx) / (0.2 * S)) ** 2, 0.0, 1.0)[None, :]
    lf = _smooth_noise(rng_geo, H, W, (6, 4))

    rgb_img = thermal_img = None
    if "rgb" in modalities:
        tex = lut.tex[labels] * rng_rgb.standard_normal((H, W), dtype=np.float32)
        shade = np.where(person, 1.0 - 0.32 * cyl, 1.0 + 0.1 * lf).astype(np.float32)
        img = lut.rgb[labels] * shade[..., None] + tex[..., None]
        img = _down2(img)
        warm_cast = (1.05, 1.0, 0.92) if spec.scene == "indoor" else (0.98, 1.0, 1.03)
        img = img * (spec.light * np.asarray(warm_cast, np.float32))
        img = _apply_challenge(img, spec.challenge, rng_ch)
        img = img + 1.5 * rng_rgb.standard_normal(img.shape, dtype=np.float32)
        rgb_img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    if "thermal" in modalities:
        ambient = float(rng_t.uniform(-30, -8))
        t = lut.temp[labels] + np.where(person, -16.0 * cyl, ambient + 6.0 * lf).astype(np.float32)
        t = t + 1.5 * rng_t.standard_normal((H, W), dtype=np.float32)
        t = _blur3(_blur3(_down2(t)))
        t = t - _vignette(height, width)
        t = t + 2.2 * rng_t.standard_normal(t.shape, dtype=np.float32)
        t = t + 1.2 * rng_t.standard_normal((1, width), dtype=np.float32)
        thermal_img = Image.fromarray(np.clip(t, 0, 255).astype(np.uint8), "L")

    visible = _visible(identity, labels, S)
    return Rendered(rgb=rgb_img, thermal=thermal_img, visible=visible, labels=labels)


def _visible(ident: Identity, labels: np.ndarray, S: float) -> tuple[str, ...]:
    cnt = np.bincount(labels.ravel(), minlength=_N_LABELS)
    A = S * S
    out = []
    if ident.hair == "bald":
        if ident.hat is None and cnt[L_HEADSKIN] > 0.003 * A:
            out.append("hair")
    elif cnt[L_HAIR] > 0.0025 * A:
        out.append("hair")
    if ident.hat and cnt[L_HAT] > 0.002 * A:
        out.append("hat")
    if cnt[L_UPPER] + cnt[L_UPPER_SHADE] + cnt[L_UPPER_DETAIL] > 0.01 * A:
        out.append("upper")
    if ident.lower and cnt[L_LOWER] + cnt[L_LOWER_SHADE] > 0.006 * A:
        out.append("lower")
    if cnt[L_SHOES] > 0.0015 * A:
        out.append("shoes")
    if ident.carry and cnt[L_BAG] > 0.003 * A:
        out.append("carry")
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------

_UPPER_SYN = {
    "t-shirt": [("", "t-shirt"), ("", "tee"), ("", "T-shirt"), ("short-sleeved", "shirt")],
    "shirt": [("", "shirt"), ("long-sleeved", "shirt"), ("", "button-up shirt")],
    "coat": [("", "coat"), ("", "overcoat"), ("long", "coat")],
    "jacket": [("", "jacket"), ("short", "jacket"), ("", "zip-up jacket")],
    "dress": [("", "dress"), ("long", "dress"), ("knee-length", "dress")],
}
_LOWER_SYN = {
    "trousers": [("", "trousers"), ("", "pants"), ("", "jeans"), ("long", "trousers")],
    "shorts": [("", "shorts"), ("short", "pants")],
    "skirt": [("", "skirt"), ("knee-length", "skirt"), ("", "midi skirt")],
}
_SHOES_SYN = [("", "shoes"), ("", "sneakers"), ("", "trainers")]
_HAT_SYN = {
    "cap": [("", "cap"), ("", "baseball cap")],
    "hat": [("", "hat"), ("wide-brimmed", "hat")],
}
_CARRY_SYN = {
    "backpack": [("", "backpack"), ("", "rucksack")],
    "handbag": [("", "handbag"), ("", "purse")],
    "shoulder bag": [("", "shoulder bag"), ("", "messenger bag"), ("", "crossbody bag")],
    "umbrella": [("", "umbrella"), ("folded", "umbrella"), ("closed", "umbrella")],
}
_CARRY_LOC = {
    "backpack": ["on {poss} back", ""],
    "handbag": ["in {poss} hand", ""],
    "shoulder bag": ["over {poss} shoulder", "across {poss} body", ""],
    "umbrella": ["in {poss} hand", ""],
}
_CARRY_VERB = {
    "backpack": ["carries", "is carrying", "has"],
    "handbag": ["carries", "is holding", "holds"],
    "shoulder bag": ["carries", "has", "is carrying"],
    "umbrella": ["carries", "is holding", "holds"],
}
_CARRY_PART = {
    "backpack": ["carrying", "with"],
    "handbag": ["carrying", "holding", "with"],
    "shoulder bag": ["carrying", "with"],
    "umbrella": ["carrying", "holding"],
}
_WEAR = ["wears", "is wearing", "is dressed in", "has on"]
_WEARING = ["wearing", "dressed in", "in"]
_PLURAL = {"trousers", "pants", "jeans", "shorts", "shoes", "sneakers", "trainers"}

_COLOR_MARK = re.compile(r"§([a-z]+)§ ?")
_ARTICLE = re.compile(r"\b([Aa])n? (?=([A-Za-z]))")
_SPACES = re.compile(r"\s+")


def _cw(color: str | None) -> str:
    return f"§{color}§" if color else ""


def _np(rng, synonyms, color: str | None, allow_pair: bool = True) -> str:
    adj, noun = synonyms[int(rng.integers(len(synonyms)))]
    words = " ".join(w for w in (adj, _cw(color), noun) if w)
    if noun.split()[-1] in _PLURAL:
        return f"a pair of {words}" if allow_pair and rng.random() < 0.3 else words
    return f"a {words}"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _fix_articles(s: str) -> str:
    def rep(m: re.Match) -> str:
        return m.group(1) + ("n " if m.group(2).lower() in "aeiou" else " ")

    return _ARTICLE.sub(rep, s)


def _finish(s: str) -> tuple[str, str]:
    colored = _fix_articles(_SPACES.sub(" ", s.replace("§", "")).strip())
    plain = _fix_articles(_SPACES.sub(" ", _COLOR_MARK.sub("", s)).strip())
    return colored[0].upper() + colored[1:], plain[0].upper() + plain[1:]


def _one_caption(ident: Identity, spec: ViewSpec, visible: Sequence[str], rng) -> str:
    man = ident.gender == "man"
    pron, poss = ("he", "his") if man else ("she", "her")
    Pron = pron.capitalize()

    # which visible attributes to mention: a random subset, never all of several
    probs = {"hair": 0.65, "hat": 0.75, "upper": 0.92, "lower": 0.8, "shoes": 0.45, "carry": 0.8}
    cands = [a for a in ("hair", "hat", "upper", "lower", "shoes", "carry") if a in visible]
    chosen = [a for a in cands if rng.random() < probs[a]]
    if len(cands) >= 3 and len(chosen) == len(cands):
        droppable = [a for a in chosen if a != "upper"]
        chosen.remove(droppable[int(rng.integers(len(droppable)))])
    while len(chosen) < min(2, len(cands)):
        rest = [a for a in cands if a not in chosen]
        chosen.append(rest[int(rng.integers(len(rest)))])
    chosen_set = set(chosen)

    # subject
    adjs = []
    if ident.height_cm >= 184 and rng.random() < 0.35:
        adjs.append("tall")
    elif ident.height_cm <= 156 and rng.random() < 0.35:
        adjs.append("short")
    if ident.build != "average" and rng.random() < 0.35:
        adjs.append(
            _choice(
                rng,
                ["slim", "thin", "slender"]
                if ident.build == "slim"
                else ["heavy-set", "stout", "heavy"],
            )
        )
    if rng.random() < 0.6:
        adjs.append(
            {"young": "young", "middle-aged": "middle-aged"}.get(ident.age)
            or _choice(rng, ["elderly", "old", "older"])
        )
    nouns = (
        ["man", "man", "male pedestrian"]
        if man
        else ["woman", "woman", "female pedestrian", "lady"]
    )
    if ident.age == "young":
        nouns.append("guy" if man else "girl")
    elif man:
        nouns.append("gentleman")
    noun = _choice(rng, nouns)
    subj_core = " ".join(adjs + [noun])

    # noun phrases
    hair_np = None
    if "hair" in chosen_set:
        if ident.hair == "bald":
            hair_np = "a bald head"
        else:
            length = _choice(
                rng,
                ["short", "short", "cropped"]
                if ident.hair == "short"
                else ["long", "long", "shoulder-length"],
            )
            hair_np = f"{length} {_cw(ident.hair_color)} hair"
    clothes = []
    if "hat" in chosen_set:
        clothes.append(_np(rng, _HAT_SYN[ident.hat], ident.hat_color))
    if "upper" in chosen_set:
        clothes.append(_np(rng, _UPPER_SYN[ident.upper], ident.upper_color))
    if "lower" in chosen_set:
        clothes.append(_np(rng, _LOWER_SYN[ident.lower], ident.lower_color))
    if "shoes" in chosen_set:
        clothes.append(_np(rng, _SHOES_SYN, ident.shoes_color, allow_pair=len(clothes) == 0))
    if len(clothes) > 1 and "hat" in chosen_set and rng.random() < 0.6:
        clothes.append(clothes.pop(0))  # hat mentioned last
    carry_np = carry_loc = None
    if "carry" in chosen_set:
        carry_np = _np(rng, _CARRY_SYN[ident.carry], ident.carry_color)
        carry_loc = _choice(rng, _CARRY_LOC[ident.carry]).format(poss=poss)
    clothes_txt = _join(clothes)

    def carry_clause() -> str:
        return " ".join(
            w for w in (_choice(rng, _CARRY_VERB[ident.carry]), carry_np, carry_loc) if w
        )

    def wear_clause() -> str:
        return f"{_choice(rng, _WEAR)} {clothes_txt}" if clothes else "is walking"

    template = int(rng.integers(5))
    if template == 0:
        s = f"{_choice(rng, ['A', 'The'])} {subj_core}"
        if hair_np:
            s += f" with {hair_np}"
        s += f" {wear_clause()}"
        if carry_np:
            s += f" and {carry_clause()}"
        s += "."
    elif template == 1:
        s = f"{_choice(rng, ['The', 'This'])} {subj_core} {wear_clause()}."
        second = []
        if hair_np:
            second.append(f"has {hair_np}")
        if carry_np:
            second.append(carry_clause())
        if second:
            s += f" {Pron} " + " and ".join(second) + "."
    elif template == 2:
        s = f"A {subj_core}"
        if hair_np:
            s += f" with {hair_np}"
        if clothes:
            s += f" {_choice(rng, _WEARING)} {clothes_txt}"
        if carry_np:
            s += f", {_choice(rng, _CARRY_PART[ident.carry])} {carry_np}"
            if carry_loc:
                s += f" {carry_loc}"
        s += "."
    elif template == 3:
        s = f"The pedestrian is a {subj_core.replace(' pedestrian', '')}"
        if clothes:
            s += f" {_choice(rng, _WEARING)} {clothes_txt}"
        s += "."
        if hair_np:
            s += f" {Pron} has {hair_np}."
        if carry_np:
            s += f" {Pron} {carry_clause()}."
    else:
        opener = f"This {subj_core}"
        if hair_np:
            s = f"{opener} has {hair_np}"
            s += (
                f" and {_choice(rng, ['is dressed in', 'is wearing'])} {clothes_txt}."
                if clothes
                else "."
            )
        else:
            s = f"{opener} {wear_clause()}."
        if carry_np:
            s += f" {Pron} {carry_clause()}."
    if rng.random() < 0.2:
        if spec.view == "front":
            s += f" {Pron} is facing the camera."
        elif spec.view == "back":
            s += f" {Pron} is walking away from the camera."
        else:
            s += f" {Pron} is walking to the {'left' if spec.mirror else 'right'}."
    return s


def make_captions(
    identity: Identity,
    spec: ViewSpec,
    visible: Sequence[str],
    rng: np.random.Generator,
    n: int = 1,
) -> tuple[list[str], list[str]]:
    """``n`` different captions of one image and their colour-free versions."""
    caps: list[str] = []
    plain: list[str] = []
    for _ in range(n):
        for _attempt in range(6):
            c, p = _finish(_one_caption(identity, spec, visible, rng))
            if c not in caps:
                break
        caps.append(c)
        plain.append(p)
    return caps, plain


def tokenize(caption: str) -> list[str]:
    """Lower-case word tokens without punctuation (CUHK-PEDES ``processed_tokens`` style)."""
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", caption.lower())


# ----------------------------------------------------------------------------------------------
# Records and streaming generation
# ----------------------------------------------------------------------------------------------


def _image_count(pid: int, seed: int, images_per_id: int | tuple[int, int], stream: int = 0) -> int:
    lo, hi = (images_per_id, images_per_id) if isinstance(images_per_id, int) else images_per_id
    if lo < 1 or hi < lo:
        raise ValueError(f"bad images_per_id range {images_per_id!r}")
    return int(_rng(seed, pid, 3, stream).integers(lo, hi + 1))


def make_record(
    identity: Identity,
    index: int,
    seed: int = 0,
    split: str = "train",
    height: int = 128,
    width: int = 64,
    *,
    challenge_weights: Mapping[str, float] | None = None,
    view_weights: Mapping[str, float] | None = None,
    captions_per_image: int | tuple[int, int] = (1, 2),
    modalities: Iterable[str] = ("rgb", "thermal"),
    stream: int = 0,
) -> ImageRecord:
    """Sample, render and caption image ``index`` (1-based) of ``identity``."""
    spec = sample_view(
        identity,
        index,
        seed,
        challenge_weights=challenge_weights,
        view_weights=view_weights,
        stream=stream,
    )
    out = render(identity, spec, height, width, modalities)
    lo, hi = (
        (captions_per_image,) * 2 if isinstance(captions_per_image, int) else captions_per_image
    )
    rng = _rng(seed, identity.pid, index, 2, stream)
    n = int(rng.integers(lo, hi + 1))
    caps, plain = make_captions(identity, spec, out.visible, rng, n)
    return ImageRecord(
        pid=identity.pid,
        index=index,
        name=f"{identity.pid:04d}_{index:02d}",
        split=split,
        view=spec.view,
        challenge=spec.challenge,
        scene=spec.scene,
        rgb=out.rgb,
        thermal=out.thermal,
        captions=caps,
        no_color_captions=plain,
        visible=out.visible,
        identity=identity,
        spec=spec,
    )


def generate(
    num_ids: int,
    images_per_id: int | tuple[int, int] = (2, 4),
    seed: int = 0,
    height: int = 128,
    width: int = 64,
    *,
    split_ratios: Mapping[str, float] | None = None,
    challenge_weights: Mapping[str, float] | None = None,
    view_weights: Mapping[str, float] | None = None,
    captions_per_image: int | tuple[int, int] = (1, 2),
    modalities: Iterable[str] = ("rgb", "thermal"),
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[ImageRecord]:
    """Stream the records of identities ``1..num_ids``, image by image.

    Nothing is kept in memory between records. ``split_ratios`` defaults to 70 % train / 30 %
    test by identity; ``progress(ids_done, num_ids)`` is called after each identity.
    """
    splits = assign_splits(num_ids, seed, split_ratios)
    for pid in range(1, num_ids + 1):
        ident = make_identity(pid, seed)
        for index in range(1, _image_count(pid, seed, images_per_id) + 1):
            yield make_record(
                ident,
                index,
                seed,
                splits[pid],
                height,
                width,
                challenge_weights=challenge_weights,
                view_weights=view_weights,
                captions_per_image=captions_per_image,
                modalities=modalities,
            )
        if progress is not None:
            progress(pid, num_ids)


def contact_sheet(records: Iterable[ImageRecord], cols: int = 6, zoom: int = 2) -> Image.Image:
    """RGB | thermal pairs with their view / challenge under each (for eyeballing)."""
    records = list(records)
    if not records:
        raise ValueError("no records")
    w, h = records[0].rgb.size
    tw, th = 2 * w * zoom + 6, h * zoom + 26
    rows = (len(records) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tw, rows * th), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for i, rec in enumerate(records):
        x, y = (i % cols) * tw, (i // cols) * th
        sheet.paste(rec.rgb.resize((w * zoom, h * zoom), Image.Resampling.NEAREST), (x, y))
        sheet.paste(
            rec.thermal.convert("RGB").resize((w * zoom, h * zoom), Image.Resampling.NEAREST),
            (x + w * zoom + 2, y),
        )
        d.text((x + 2, y + h * zoom + 1), f"{rec.name} {rec.view}", fill=(0, 0, 0))
        d.text((x + 2, y + h * zoom + 12), rec.challenge, fill=(160, 0, 0))
    return sheet


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------


def _dataset_root(out_dir: str | Path, name: str, overwrite: bool) -> Path:
    root = Path(out_dir) / name
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{root} exists and is not empty; use overwrite=True (--overwrite) to replace it"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


class _Summary:
    def __init__(self, fmt: str, root: Path) -> None:
        self.fmt, self.root = fmt, root
        self.ids: dict[str, set] = {}
        self.images: Counter = Counter()
        self.captions: Counter = Counter()
        self.challenges: Counter = Counter()
        self.extra: dict = {}

    def add(
        self,
        split: str,
        pid: int,
        n_images: int = 1,
        n_captions: int = 0,
        challenge: str | None = None,
    ):
        self.ids.setdefault(split, set()).add(pid)
        self.images[split] += n_images
        self.captions[split] += n_captions
        if challenge:
            self.challenges[challenge] += n_images

    def as_dict(self) -> dict:
        out = {
            "format": self.fmt,
            "root": str(self.root),
            "ids": {k: len(v) for k, v in self.ids.items()},
            "images": dict(self.images),
            "captions": dict(self.captions),
            "challenges": dict(self.challenges),
        }
        out.update(self.extra)
        return out


def _save(img: Image.Image, path: Path, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=quality)
    else:
        img.save(path)


def _dump_json(obj, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)


def write_rgbtpedes(
    out_dir: str | Path,
    num_ids: int,
    seed: int = 0,
    images_per_id: int | tuple[int, int] = (2, 4),
    height: int = 128,
    width: int = 64,
    *,
    split_ratio: float = 0.7,
    captions_per_image: int | tuple[int, int] = (1, 2),
    challenge_weights: Mapping[str, float] | None = None,
    empty_caption_prob: float = 0.0,
    jpeg_quality: int = 92,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """RGBT-PEDES layout under ``<out_dir>/RGBT-PEDES``.

    ``RGB/<pid %04d>_<idx %02d>.jpg`` and ``T/<same>.jpg`` (single-channel) are one pair;
    ``caption_2_no_color.json`` lists ``{"split", "captions", "no_color_caption", "file_path":
    "RGB/<name>.jpg", "id"}``; ``challenge_json/<challenge>.json`` lists the *test* image
    basenames of each non-normal challenge. ``empty_caption_prob`` blanks captions at random
    (the release has some empty ones).
    """
    root = _dataset_root(out_dir, "RGBT-PEDES", overwrite)
    summary = _Summary("rgbtpedes", root)
    entries = []
    lists: dict[str, list[str]] = {c: [] for c in CHALLENGES if c != "normal"}
    for rec in generate(
        num_ids,
        images_per_id,
        seed,
        height,
        width,
        split_ratios={"train": split_ratio, "test": 1.0 - split_ratio},
        challenge_weights=challenge_weights,
        captions_per_image=captions_per_image,
        progress=progress,
    ):
        fname = f"{rec.name}.jpg"
        _save(rec.rgb, root / "RGB" / fname, jpeg_quality)
        _save(rec.thermal, root / "T" / fname, jpeg_quality)
        caps, plain = list(rec.captions), list(rec.no_color_captions)
        if empty_caption_prob > 0:
            erng = _rng(seed, rec.pid, rec.index, 5)
            for i in range(len(caps)):
                if erng.random() < empty_caption_prob:
                    caps[i] = plain[i] = ""
        entries.append(
            {
                "split": rec.split,
                "captions": caps,
                "no_color_caption": plain,
                "file_path": f"RGB/{fname}",
                "id": rec.pid,
            }
        )
        if rec.split == "test" and rec.challenge in lists:
            lists[rec.challenge].append(fname)
        summary.add(rec.split, rec.pid, 1, sum(1 for c in caps if c), rec.challenge)
    _dump_json(entries, root / "caption_2_no_color.json")
    (root / "challenge_json").mkdir(exist_ok=True)
    for challenge, names in lists.items():
        _dump_json(sorted(names), root / "challenge_json" / f"{challenge}.json")
    summary.extra["test_challenges"] = {c: len(v) for c, v in lists.items()}
    return summary.as_dict()


def write_cuhkpedes(
    out_dir: str | Path,
    num_ids: int,
    seed: int = 0,
    images_per_id: int | tuple[int, int] = (2, 4),
    height: int = 128,
    width: int = 64,
    *,
    split_ratios: Mapping[str, float] | None = None,
    captions_per_image: int | tuple[int, int] = (2, 2),
    challenge_weights: Mapping[str, float] | None = None,
    jpeg_quality: int = 92,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """CUHK-PEDES layout under ``<out_dir>/CUHK-PEDES``: ``reid_raw.json`` and
    ``imgs/synth/<pid %04d>_<idx %02d>.jpg`` (RGB only); splits train/val/test by identity
    (default 80/10/10)."""
    root = _dataset_root(out_dir, "CUHK-PEDES", overwrite)
    summary = _Summary("cuhkpedes", root)
    entries = []
    weights = challenge_weights or {"normal": 0.85, "occlusion": 0.1, "strong_light": 0.05}
    for rec in generate(
        num_ids,
        images_per_id,
        seed,
        height,
        width,
        split_ratios=split_ratios or {"train": 0.8, "val": 0.1, "test": 0.1},
        challenge_weights=weights,
        captions_per_image=captions_per_image,
        modalities=("rgb",),
        progress=progress,
    ):
        rel = f"synth/{rec.name}.jpg"
        _save(rec.rgb, root / "imgs" / rel, jpeg_quality)
        entries.append(
            {
                "split": rec.split,
                "captions": rec.captions,
                "file_path": rel,
                "processed_tokens": [tokenize(c) for c in rec.captions],
                "id": rec.pid,
            }
        )
        summary.add(rec.split, rec.pid, 1, len(rec.captions), rec.challenge)
    _dump_json(entries, root / "reid_raw.json")
    return summary.as_dict()


_VI_VIS_WEIGHTS = {
    "normal": 0.8,
    "occlusion": 0.1,
    "strong_light": 0.05,
    "abnormal_illumination": 0.05,
}
_VI_IR_WEIGHTS = {"normal": 0.9, "occlusion": 0.1}
_LLCM_VIS_WEIGHTS = {
    "normal": 0.35,
    "low_light": 0.35,
    "darkness": 0.1,
    "abnormal_illumination": 0.1,
    "strong_light": 0.05,
    "occlusion": 0.05,
}


def _vi_render(ident, index, seed, height, width, stream, weights, view_weights=None):
    """Render one camera image: stream 0 = visible (RGB), 1 = infrared (thermal)."""
    spec = sample_view(
        ident, index, seed, challenge_weights=weights, view_weights=view_weights, stream=stream
    )
    modality = "rgb" if stream == 0 else "thermal"
    out = render(ident, spec, height, width, (modality,))
    return (out.rgb if stream == 0 else out.thermal), spec, out.visible


def _vi_caption(ident, spec, visible, seed, index, stream) -> str:
    caps, plain = make_captions(ident, spec, visible, _rng(seed, ident.pid, index, 2, stream), 1)
    return caps[0] if stream == 0 else plain[0]


def write_regdb(
    out_dir: str | Path,
    num_ids: int,
    seed: int = 0,
    images_per_id: int | tuple[int, int] = 10,
    height: int = 128,
    width: int = 64,
    *,
    trials: int = 10,
    challenge_weights: Mapping[str, float] | None = None,
    captions_json: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """RegDB layout under ``<out_dir>/RegDB``.

    ``Visible/<pid>/<male|female>_<front|back>_v_<serial %05d>_<k>.bmp`` and
    ``Thermal/<pid>/..._t_...bmp`` (``images_per_id`` of each per identity, default 10; the
    thermal images are other views than the visible ones); ``idx/{train,test}_{visible,thermal}_
    {t}.txt`` for t = 1..trials: trial t splits the ids with ``default_rng([seed, t])``'s
    permutation, first half train (labels 0..N-1 in pid order), rest test (label = pid - 1).
    """
    root = _dataset_root(out_dir, "RegDB", overwrite)
    summary = _Summary("regdb", root)
    views = {"front": 0.5, "back": 0.5}
    files: dict[int, dict[str, list[str]]] = {}
    captions: dict[str, str] = {}
    serial = {"v": 0, "t": 0}
    for pid in range(1, num_ids + 1):
        ident = make_identity(pid, seed)
        gender = "male" if ident.gender == "man" else "female"
        files[pid] = {"visible": [], "thermal": []}
        n = _image_count(pid, seed, images_per_id)
        for stream, (folder, tag) in enumerate((("Visible", "v"), ("Thermal", "t"))):
            weights = challenge_weights or (_VI_VIS_WEIGHTS if stream == 0 else _VI_IR_WEIGHTS)
            for k in range(1, n + 1):
                img, spec, visible = _vi_render(
                    ident, k, seed, height, width, stream, weights, views
                )
                serial[tag] += 1
                rel = f"{folder}/{pid}/{gender}_{spec.view}_{tag}_{serial[tag]:05d}_{k}.bmp"
                _save(img, root / rel)
                files[pid][folder.lower()].append(rel)
                summary.challenges[spec.challenge] += 1
                if captions_json:
                    captions[rel] = _vi_caption(ident, spec, visible, seed, k, stream)
        if progress is not None:
            progress(pid, num_ids)
    idx = root / "idx"
    idx.mkdir(exist_ok=True)
    pids = list(range(1, num_ids + 1))
    for t in range(1, trials + 1):
        perm = [int(p) for p in _rng(seed, t).permutation(pids)]
        half = num_ids // 2
        train, test = sorted(perm[:half]), sorted(perm[half:])
        relabel = {p: i for i, p in enumerate(train)}
        for split, ids, label in (
            ("train", train, relabel.__getitem__),
            ("test", test, lambda p: p - 1),
        ):
            for modality in ("visible", "thermal"):
                lines = [f"{rel} {label(p)}" for p in ids for rel in files[p][modality]]
                (idx / f"{split}_{modality}_{t}.txt").write_text("\n".join(lines) + "\n")
    n_vis = sum(len(f["visible"]) for f in files.values())
    n_th = sum(len(f["thermal"]) for f in files.values())
    summary.extra["ids"] = {
        "all": num_ids,
        "train_per_trial": num_ids // 2,
        "test_per_trial": num_ids - num_ids // 2,
    }
    summary.extra["images"] = {"visible": n_vis, "thermal": n_th}
    summary.extra["trials"] = trials
    if captions_json:
        _dump_json(captions, root / "captions_synthetic.json")
    return summary.as_dict()


def _pick_cams(rng, cams: Sequence[int], lo: int, hi: int) -> list[int]:
    n = int(rng.integers(lo, min(hi, len(cams)) + 1))
    return sorted(int(c) for c in rng.choice(cams, size=n, replace=False))


def write_llcm(
    out_dir: str | Path,
    num_ids: int,
    seed: int = 0,
    images_per_id: int | tuple[int, int] = (2, 4),
    height: int = 128,
    width: int = 64,
    *,
    train_ratio: float = 2 / 3,
    challenge_weights: Mapping[str, float] | None = None,
    captions_json: bool = False,
    jpeg_quality: int = 92,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """LLCM layout under ``<out_dir>/LLCM``; ``images_per_id`` is per (identity, camera).

    Train: ``vis/<pid %04d>/<pid %04d>_c<cam %02d>_s<seq %06d>_f<frame %04d>_vis.jpg`` and
    ``nir/.../..._nir.jpg`` listed in ``idx/train_vis.txt`` / ``idx/train_nir.txt`` as
    ``<relative path> <label>`` (labels 0..N-1 in pid order, shared by both modalities).
    Test: ``test_vis/cam<k>/<pid %04d>/..._vis.jpg`` and ``test_nir/cam<k>/<pid %04d>/..._nir.jpg``;
    ``idx/test_id.txt`` is ONE comma-separated line of the test pids (like SYSU-MM01).
    Each identity has 2-4 visible cameras (of 1-9) and 2-3 near-infrared cameras (of 1,2,4-9).
    """
    root = _dataset_root(out_dir, "LLCM", overwrite)
    summary = _Summary("llcm", root)
    splits = assign_splits(num_ids, seed, {"train": train_ratio, "test": 1.0 - train_ratio})
    train_ids = sorted(p for p, s in splits.items() if s == "train")
    relabel = {p: i for i, p in enumerate(train_ids)}
    lines: dict[str, list[str]] = {"vis": [], "nir": []}
    captions: dict[str, str] = {}
    vis_cams, nir_cams = list(range(1, 10)), [1, 2, 4, 5, 6, 7, 8, 9]
    for pid in range(1, num_ids + 1):
        ident = make_identity(pid, seed)
        split = splits[pid]
        rng = _rng(seed, pid, 4)
        index = {0: 0, 1: 0}
        for stream, (mod, cams) in enumerate(
            (("vis", _pick_cams(rng, vis_cams, 2, 4)), ("nir", _pick_cams(rng, nir_cams, 2, 3)))
        ):
            weights = challenge_weights or (_LLCM_VIS_WEIGHTS if stream == 0 else _VI_IR_WEIGHTS)
            for cam in cams:
                seq = int(rng.integers(100000, 240000))
                frame = int(rng.integers(100, 6000))
                for _ in range(_image_count(pid, seed, images_per_id, stream=100 * stream + cam)):
                    index[stream] += 1
                    img, spec, visible = _vi_render(
                        ident, index[stream], seed, height, width, stream, weights
                    )
                    frame += int(rng.integers(5, 60))
                    fname = f"{pid:04d}_c{cam:02d}_s{seq:06d}_f{frame:04d}_{mod}.jpg"
                    if split == "train":
                        rel = f"{mod}/{pid:04d}/{fname}"
                        lines[mod].append(f"{rel} {relabel[pid]}")
                    else:
                        rel = f"test_{mod}/cam{cam}/{pid:04d}/{fname}"
                    _save(img, root / rel, jpeg_quality)
                    summary.add(f"{split}_{mod}", pid, 1, 0, spec.challenge)
                    if captions_json:
                        captions[rel] = _vi_caption(
                            ident, spec, visible, seed, index[stream], stream
                        )
        if progress is not None:
            progress(pid, num_ids)
    idx = root / "idx"
    idx.mkdir(exist_ok=True)
    for mod in ("vis", "nir"):
        (idx / f"train_{mod}.txt").write_text("\n".join(lines[mod]) + "\n")
    test_ids = sorted(p for p, s in splits.items() if s == "test")
    (idx / "test_id.txt").write_text(",".join(str(p) for p in test_ids) + "\n")
    if captions_json:
        _dump_json(captions, root / "captions_synthetic.json")
    return summary.as_dict()


def write_sysumm01(
    out_dir: str | Path,
    num_ids: int,
    seed: int = 0,
    images_per_id: int | tuple[int, int] = (2, 4),
    height: int = 128,
    width: int = 64,
    *,
    split_ratios: Mapping[str, float] | None = None,
    challenge_weights: Mapping[str, float] | None = None,
    captions_json: bool = False,
    jpeg_quality: int = 92,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """SYSU-MM01 layout under ``<out_dir>/SYSU-MM01``; ``images_per_id`` is per (identity, camera).

    ``cam{1..6}/<pid %04d>/<k %04d>.jpg`` (k from 1 per identity and camera); visible cameras
    1, 2, 4, 5 hold RGB renders, infrared cameras 3, 6 thermal ones. Each identity appears in
    2-4 visible cameras (always 1 or 2 among them) and 1-2 infrared cameras.
    ``exp/{train_id,val_id,test_id}.txt``: one comma-separated line of pids each (default split
    60/20/20 by identity).
    """
    root = _dataset_root(out_dir, "SYSU-MM01", overwrite)
    summary = _Summary("sysumm01", root)
    splits = assign_splits(num_ids, seed, split_ratios or {"train": 0.6, "val": 0.2, "test": 0.2})
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(exist_ok=True)
    captions: dict[str, str] = {}
    for pid in range(1, num_ids + 1):
        ident = make_identity(pid, seed)
        rng = _rng(seed, pid, 4)
        vis = _pick_cams(rng, [1, 2, 4, 5], 2, 4)
        if 1 not in vis and 2 not in vis:
            vis = sorted([int(rng.choice([1, 2]))] + vis[1:])
        ir = _pick_cams(rng, [3, 6], 1, 2)
        index = {0: 0, 1: 0}
        for stream, cams in ((0, vis), (1, ir)):
            weights = challenge_weights or (_VI_VIS_WEIGHTS if stream == 0 else _VI_IR_WEIGHTS)
            for cam in cams:
                for k in range(
                    1, _image_count(pid, seed, images_per_id, stream=100 * stream + cam) + 1
                ):
                    index[stream] += 1
                    img, spec, visible = _vi_render(
                        ident, index[stream], seed, height, width, stream, weights
                    )
                    rel = f"cam{cam}/{pid:04d}/{k:04d}.jpg"
                    _save(img, root / rel, jpeg_quality)
                    summary.add(
                        f"{splits[pid]}_{'vis' if stream == 0 else 'ir'}", pid, 1, 0, spec.challenge
                    )
                    if captions_json:
                        captions[rel] = _vi_caption(
                            ident, spec, visible, seed, index[stream], stream
                        )
        if progress is not None:
            progress(pid, num_ids)
    (root / "exp").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        ids = sorted(p for p, s in splits.items() if s == split)
        (root / "exp" / f"{split}_id.txt").write_text(",".join(str(p) for p in ids) + "\n")
    if captions_json:
        _dump_json(captions, root / "captions_synthetic.json")
    return summary.as_dict()


#: format name -> writer(out_dir, num_ids, seed, images_per_id, height, width, **kwargs)
WRITERS: dict[str, Callable[..., dict]] = {
    "rgbtpedes": write_rgbtpedes,
    "cuhkpedes": write_cuhkpedes,
    "regdb": write_regdb,
    "llcm": write_llcm,
    "sysumm01": write_sysumm01,
}


def ensure_synthetic(data_root: str | Path, fmt: str, num_ids: int, seed: int = 0) -> bool:
    """Write a synthetic dataset under ``data_root`` unless one with these settings is there.

    A ``synthetic.json`` stamp in the dataset folder records the settings it was written with.
    Returns True when it generated the data, False when the cached copy was reused.
    """
    wanted = {"format": fmt, "ids": num_ids, "seed": seed}
    for folder in Path(data_root).glob("*"):
        stamp = folder / "synthetic.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
            return False
    summary = WRITERS[fmt](data_root, num_ids, seed=seed, overwrite=True)
    (Path(summary["root"]) / "synthetic.json").write_text(json.dumps(wanted))
    return True
