"""Identities and views: the attribute vocabulary, the colour palette and seeded sampling.

Every random choice comes from ``numpy.random.default_rng`` seeded with a tuple ``(seed, pid,
...)`` (``seeded_rng``), so an identity, a view or a caption does not depend on the order in which
things are generated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

_PALETTE_TABLE = (
    "black 28 28 32, white 232 232 228, grey 128 128 130, red 192 32 38, blue 36 70 172,"
    " green 38 128 58, yellow 232 200 40, orange 236 120 30, pink 236 140 178,"
    " purple 112 52 142, brown 110 70 40, beige 214 194 156"
)
#: Colour name -> RGB, in the table's order.
PALETTE: dict[str, tuple[int, int, int]] = {
    name: (int(r), int(g), int(b))
    for name, r, g, b in (entry.split() for entry in _PALETTE_TABLE.split(","))
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


def seeded_rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def choice(rng: np.random.Generator, options: Sequence, weights=None):
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
    rng = seeded_rng(seed, pid, 0)
    gender = choice(rng, GENDERS)
    man = gender == "man"
    age = choice(rng, AGES, [0.45, 0.35, 0.2])
    build = choice(rng, BUILDS, [0.3, 0.5, 0.2])
    height = int(np.clip(rng.normal(176 if man else 163, 7 if man else 6), 148, 198))
    skin = int(rng.integers(len(SKIN_TONES)))
    if man:
        hair = choice(rng, HAIR_STYLES, [0.8, 0.06, 0.14] if age == "young" else [0.68, 0.04, 0.28])
    else:
        hair = choice(rng, HAIR_STYLES, [0.3, 0.7, 0.0])
    if hair == "bald":
        hair_color = None
    elif age == "elderly":
        hair_color = choice(rng, HAIR_COLOR_NAMES, [0.12, 0.1, 0.03, 0.45, 0.3])
    else:
        hair_color = choice(rng, HAIR_COLOR_NAMES, [0.52, 0.3, 0.12, 0.04, 0.02])
    if man:
        upper = choice(rng, UPPER_TYPES, [0.3, 0.25, 0.2, 0.25, 0.0])
    else:
        upper = choice(rng, UPPER_TYPES, [0.22, 0.17, 0.2, 0.18, 0.23])
    upper_color = choice(rng, COLOR_NAMES, _UPPER_COLOR_W)
    if upper == "dress":
        lower, lower_color = None, None
    else:
        lower = choice(rng, LOWER_TYPES, [0.75, 0.25, 0.0] if man else [0.5, 0.15, 0.35])
        lower_color = choice(rng, COLOR_NAMES, _LOWER_COLOR_W)
    shoes_color = choice(rng, COLOR_NAMES, _SHOES_COLOR_W)
    carry_w = [0.3, 0.25, 0.05, 0.22, 0.18] if man else [0.25, 0.18, 0.25, 0.18, 0.14]
    carry = choice(rng, (None,) + CARRY_TYPES, carry_w)
    carry_color = choice(rng, COLOR_NAMES, _CARRY_COLOR_W) if carry else None
    hat = choice(rng, (None,) + HAT_TYPES, [0.65, 0.2, 0.15])
    hat_color = choice(rng, COLOR_NAMES) if hat else None
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
    rng = seeded_rng(seed, identity.pid, index, 1, stream)
    view = choice(rng, dict(view_weights or DEFAULT_VIEW_WEIGHTS))
    challenge = choice(rng, dict(challenge_weights or DEFAULT_CHALLENGE_WEIGHTS))
    scene = choice(rng, SCENES)
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
    occluder = choice(rng, OCCLUDERS)
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
    perm = seeded_rng(seed, 7).permutation(num_ids) + 1
    out: dict[int, str] = {}
    start = 0
    for name, size in zip(names, sizes):
        for pid in perm[start : start + size]:
            out[int(pid)] = name
        start += size
    return out


def image_count(pid: int, seed: int, images_per_id: int | tuple[int, int], stream: int = 0) -> int:
    lo, hi = (images_per_id, images_per_id) if isinstance(images_per_id, int) else images_per_id
    if lo < 1 or hi < lo:
        raise ValueError(f"bad images_per_id range {images_per_id!r}")
    return int(seeded_rng(seed, pid, 3, stream).integers(lo, hi + 1))


def each_identity(
    num_ids: int, seed: int = 0, progress: Callable[[int, int], None] | None = None
) -> Iterator[Identity]:
    """Identities ``1..num_ids`` of dataset seed ``seed``, one at a time.

    ``progress(ids_done, num_ids)`` is called when the caller has finished with an identity and
    asks for the next one (or for the end).
    """
    for pid in range(1, num_ids + 1):
        yield make_identity(pid, seed)
        if progress is not None:
            progress(pid, num_ids)
