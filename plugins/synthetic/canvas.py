"""The label map both modalities are rendered from: label ids, drawing primitives, label colours.

A scene is drawn once as a label map (one uint8 label per pixel, supersampled); ``Luts`` maps each
label to an RGB colour, a temperature and a texture-noise amplitude for one render.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import ImageDraw

# Label ids: background 1..18, the person PERSON_LO..PERSON_HI - 1, occluders 50..52.
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
N_LABELS = 64
PERSON_LO, PERSON_HI = 32, 48


def point_at(p, angle_deg: float, length: float) -> tuple[float, float]:
    """Point ``length`` away from ``p``; angle 0 points down, positive angles towards +x."""
    a = math.radians(angle_deg)
    return (p[0] + length * math.sin(a), p[1] + length * math.cos(a))


def lerp(p, q, t: float) -> tuple[float, float]:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


def disc(d: ImageDraw.ImageDraw, p, r: float, label: int, ry: float | None = None) -> None:
    ry = r if ry is None else ry
    d.ellipse([p[0] - r, p[1] - ry, p[0] + r, p[1] + ry], fill=label)


def limb(d: ImageDraw.ImageDraw, p0, p1, w0: float, w1: float, label: int) -> None:
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
    disc(d, p0, w0 / 2, label)
    disc(d, p1, w1 / 2, label)


def rect(d: ImageDraw.ImageDraw, x0, y0, x1, y1, label: int, radius: float = 0.0) -> None:
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    if radius > 0.5:
        d.rounded_rectangle([x0, y0, x1, y1], radius=radius, fill=label)
    else:
        d.rectangle([x0, y0, x1, y1], fill=label)


class Luts:
    """Per-render label -> RGB colour, temperature and texture-noise amplitude."""

    def __init__(self) -> None:
        self.rgb = np.zeros((N_LABELS, 3), np.float32)
        self.temp = np.full(N_LABELS, 90.0, np.float32)
        self.tex = np.full(N_LABELS, 4.0, np.float32)

    def set(self, label: int, rgb, temp: float, tex: float = 4.0) -> None:
        self.rgb[label] = rgb
        self.temp[label] = temp
        self.tex[label] = tex


def jit(rng: np.random.Generator, rgb, amount: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)
