"""RGB and thermal rendering of one view from its label map, with the lighting challenges."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .canvas import (
    L_BAG,
    L_HAIR,
    L_HAT,
    L_HEADSKIN,
    L_LOWER,
    L_LOWER_SHADE,
    L_SHADOW,
    L_SHOES,
    L_UPPER,
    L_UPPER_DETAIL,
    L_UPPER_SHADE,
    N_LABELS,
    PERSON_HI,
    PERSON_LO,
    Luts,
)
from .identities import Identity, ViewSpec, seeded_rng
from .person import draw_person, person_luts
from .scenes import PAINTERS, draw_occluder

SUPERSAMPLE = 2  # supersampling factor of the label map


@dataclass
class Rendered:
    rgb: Image.Image | None
    thermal: Image.Image | None
    visible: tuple[str, ...]
    labels: np.ndarray  # (2H, 2W) uint8 label map


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
    H, W = height * SUPERSAMPLE, width * SUPERSAMPLE
    rng_geo = seeded_rng(spec.noise_seed, 0)
    rng_rgb = seeded_rng(spec.noise_seed, 1)
    rng_t = seeded_rng(spec.noise_seed, 2)
    rng_ch = seeded_rng(spec.noise_seed, 3)

    lab = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(lab)
    lut = Luts()
    floor_label = PAINTERS[spec.scene](d, rng_geo, H, W, lut)
    lut.set(
        L_SHADOW, lut.rgb[floor_label] * 0.6, lut.temp[floor_label] - 4, lut.tex[floor_label] * 0.6
    )

    S = spec.scale * min(H, 2.0 * W)
    fy = H * spec.feet
    cx = W / 2 + spec.dx * W
    d.ellipse([cx - 0.17 * S, fy - 0.018 * S, cx + 0.2 * S, fy + 0.022 * S], fill=L_SHADOW)
    toffset = float(rng_t.uniform(-5, 5))
    person_luts(identity, lut, rng_rgb, toffset)
    draw_person(d, identity, spec, cx, fy, S)
    if spec.occluder:
        draw_occluder(d, rng_geo, spec.occluder, spec, cx, fy, S, H, W, lut)
    labels = np.asarray(lab)
    if spec.mirror:
        labels = np.ascontiguousarray(labels[:, ::-1])
        cx = W - cx
    person = (labels >= PERSON_LO) & (labels < PERSON_HI)
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
    cnt = np.bincount(labels.ravel(), minlength=N_LABELS)
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
