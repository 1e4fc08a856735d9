"""Background scenes (street, grass, wall, indoor) and the occluders of the occlusion challenge."""

from __future__ import annotations

from .canvas import (
    L_BASEBOARD,
    L_BRICK,
    L_CURB,
    L_DOOR,
    L_FLOOR_A,
    L_FLOOR_B,
    L_FOLIAGE,
    L_FRAME,
    L_GRASS,
    L_GROUND,
    L_LAMP,
    L_MARK,
    L_MORTAR,
    L_OCC_A,
    L_OCC_B,
    L_OCC_C,
    L_SKY,
    L_TRUNK,
    L_WALL,
    L_WINDOW,
    Luts,
    disc,
    jit,
    rect,
)
from .identities import COLOR_NAMES, PALETTE, ViewSpec, choice


def _scene_street(d, rng, H, W, lut: Luts) -> int:
    h = H * rng.uniform(0.44, 0.62)
    rect(d, 0, 0, W, h, L_WALL)
    win_w, win_h = W * rng.uniform(0.2, 0.34), H * rng.uniform(0.09, 0.16)
    gap_x, gap_y = win_w * rng.uniform(0.4, 0.9), win_h * rng.uniform(0.4, 0.8)
    frame = max(1.0, W * 0.015)
    y = -rng.uniform(0, win_h + gap_y)
    x_start = -rng.uniform(0, win_w + gap_x)
    while y < h:
        x = x_start
        while x < W:
            rect(d, x - frame, y - frame, x + win_w + frame, y + win_h + frame, L_FRAME)
            rect(d, x, y, x + win_w, y + win_h, L_WINDOW)
            x += win_w + gap_x
        y += win_h + gap_y
    curb = h + H * 0.03
    rect(d, 0, h, W, curb, L_CURB)
    rect(d, 0, curb, W, H, L_GROUND)
    if rng.random() < 0.5:  # zebra crossing
        sh = H * rng.uniform(0.025, 0.04)
        y = curb + rng.uniform(0.02, 0.08) * H
        while y < H:
            rect(d, 0, y, W, y + sh, L_MARK)
            y += 2.2 * sh
    else:  # a lane line in perspective
        x0 = W * rng.uniform(0.1, 0.9)
        d.polygon([(x0 - 2, curb), (x0 + 2, curb), (x0 + W * 0.25, H), (x0 + W * 0.1, H)], L_MARK)
    walls = [(206, 194, 170), (172, 172, 176), (158, 92, 72), (186, 198, 210), (122, 126, 136)]
    lut.set(L_WALL, jit(rng, walls[int(rng.integers(len(walls)))]), 96, 5)
    lut.set(L_WINDOW, jit(rng, (78, 96, 118), 20), 76, 6)
    lut.set(L_FRAME, jit(rng, (200, 200, 196), 20), 92, 3)
    lut.set(L_CURB, jit(rng, (170, 168, 160)), 100, 6)
    lut.set(L_GROUND, jit(rng, (98, 98, 102), 15), 106, 9)
    lut.set(L_MARK, jit(rng, (226, 226, 220), 10), 100, 5)
    return L_GROUND


def _scene_grass(d, rng, H, W, lut: Luts) -> int:
    h = H * rng.uniform(0.42, 0.6)
    h1 = H * rng.uniform(0.06, 0.22)
    rect(d, 0, 0, W, h, L_SKY)
    for _ in range(int(rng.integers(1, 4))):
        x = W * rng.uniform(0, 1)
        rect(d, x - W * 0.04, h1, x + W * 0.04, h, L_TRUNK)
        r = W * rng.uniform(0.25, 0.5)
        disc(d, (x, h1 + r * 0.3), r, L_FOLIAGE, r * rng.uniform(0.6, 1.0))
    x = -W * 0.1
    while x < W * 1.1:  # a hedge along the horizon
        r = W * rng.uniform(0.1, 0.22)
        disc(d, (x, h - r * 0.3), r, L_FOLIAGE)
        x += r * 1.3
    rect(d, 0, h, W, H, L_GRASS)
    if rng.random() < 0.5:  # a path
        x0 = W * rng.uniform(0.2, 0.8)
        d.polygon(
            [(x0 - W * 0.05, h), (x0 + W * 0.05, h), (x0 + W * 0.6, H), (x0 - W * 0.6, H)], L_GROUND
        )
    lut.set(L_SKY, jit(rng, (176, 200, 228), 18), 34, 3)
    lut.set(L_FOLIAGE, jit(rng, (46, 92, 40), 12), 72, 22)
    lut.set(L_TRUNK, jit(rng, (86, 64, 44), 10), 82, 10)
    lut.set(L_GRASS, jit(rng, (84, 142, 58), 15), 78, 20)
    lut.set(L_GROUND, jit(rng, (168, 150, 120), 15), 96, 10)
    return L_GRASS


def _scene_wall(d, rng, H, W, lut: Luts) -> int:
    h = H * rng.uniform(0.62, 0.82)
    rect(d, 0, 0, W, h, L_MORTAR)
    bh = H * rng.uniform(0.028, 0.045)
    bw = bh * rng.uniform(2.0, 2.6)
    m = max(1.0, bh * 0.14)
    phase = rng.uniform(0, bw)
    for row in range(int(h / bh) + 1):
        y = row * bh
        x = -phase - (row % 2) * bw / 2
        while x < W:
            rect(d, x + m / 2, y + m / 2, x + bw - m / 2, min(y + bh - m / 2, h), L_BRICK)
            x += bw
    rect(d, 0, h, W, H, L_GROUND)
    tile = W * rng.uniform(0.25, 0.4)
    y = h + tile * 0.4
    while y < H:
        rect(d, 0, y, W, y + m, L_CURB)
        y += tile * 0.5
    if rng.random() < 0.6:
        lut.set(L_BRICK, jit(rng, (160, 76, 54), 18), 96, 10)
        lut.set(L_MORTAR, jit(rng, (190, 182, 170), 10), 92, 5)
    else:  # painted brick
        base = jit(rng, (200, 196, 184), 30)
        lut.set(L_BRICK, base, 95, 6)
        lut.set(L_MORTAR, base * 0.82, 93, 4)
    lut.set(L_GROUND, jit(rng, (164, 160, 150), 14), 100, 7)
    lut.set(L_CURB, lut.rgb[L_GROUND] * 0.75, 98, 4)
    return L_GROUND


def _scene_indoor(d, rng, H, W, lut: Luts) -> int:
    h = H * rng.uniform(0.55, 0.75)
    rect(d, 0, 0, W, h, L_WALL)
    dw = W * rng.uniform(0.3, 0.45)
    dx0 = W * rng.uniform(-0.1, 0.75)
    rect(d, dx0 - W * 0.03, H * 0.08 - W * 0.03, dx0 + dw + W * 0.03, h, L_FRAME)
    rect(d, dx0, H * 0.08, dx0 + dw, h, L_DOOR)
    if rng.random() < 0.6:
        disc(d, (W * rng.uniform(0.15, 0.85), H * 0.02), W * 0.16, L_LAMP, H * 0.025)
    rect(d, 0, h - H * 0.02, W, h, L_BASEBOARD)
    tile = W * rng.uniform(0.18, 0.32)
    row, y = 0, h
    while y < H:
        th = tile * (0.35 + 0.25 * (y - h) / max(1.0, H - h))
        col, x = 0, -rng.uniform(0, tile)
        while x < W:
            rect(d, x, y, x + tile, y + th, L_FLOOR_A if (row + col) % 2 else L_FLOOR_B)
            x += tile
            col += 1
        y += th
        row += 1
    walls = [(230, 224, 206), (206, 222, 230), (226, 210, 214), (214, 224, 204), (236, 236, 232)]
    lut.set(L_WALL, jit(rng, walls[int(rng.integers(len(walls)))], 8), 90, 3)
    lut.set(L_FRAME, jit(rng, (236, 236, 232), 8), 88, 2)
    lut.set(L_DOOR, jit(rng, (126, 86, 54), 25), 86, 6)
    lut.set(L_LAMP, (255, 252, 236), 176, 1)
    lut.set(L_BASEBOARD, jit(rng, (96, 86, 76), 15), 88, 3)
    fa = jit(rng, (196, 186, 164), 25)
    lut.set(L_FLOOR_A, fa, 92, 4)
    lut.set(L_FLOOR_B, fa * rng.uniform(0.55, 0.8), 91, 4)
    return L_FLOOR_A


PAINTERS = {
    "street": _scene_street,
    "grass": _scene_grass,
    "wall": _scene_wall,
    "indoor": _scene_indoor,
}


def draw_occluder(d, rng, kind: str, spec: ViewSpec, cx, fy, S, H, W, lut: Luts) -> None:
    pos, size = spec.occ_pos, spec.occ_size
    if kind == "pole":
        w = W * (0.1 + 0.08 * size)
        x = cx + pos * 0.14 * W - w / 2
        rect(d, x, 0, x + w, H, L_OCC_A)
        if rng.random() < 0.5:
            rect(d, x - w * 0.8, H * 0.05, x + w * 1.8, H * 0.05 + w * 1.6, L_OCC_B, w * 0.2)
        lut.set(L_OCC_A, jit(rng, (140, 142, 146), 25), 58, 5)
        lut.set(L_OCC_B, jit(rng, PALETTE[choice(rng, ("blue", "red", "green", "white"))]), 66, 3)
    elif kind == "car":
        top = fy - S * (0.28 + 0.2 * size)
        left = W * (-0.35 + 0.2 * pos)
        right = left + W * 1.5
        rect(d, left + W * 0.2, top, right - W * 0.3, top + 0.16 * S, L_OCC_B, 0.04 * S)
        rect(d, left, top + 0.12 * S, right, H + 10, L_OCC_A, 0.05 * S)
        for wx in (left + W * 0.3, right - W * 0.3):
            disc(d, (wx, H), 0.1 * S, L_OCC_C)
        lut.set(L_OCC_A, jit(rng, PALETTE[choice(rng, COLOR_NAMES)], 15), 114, 6)
        lut.set(L_OCC_B, jit(rng, (52, 62, 76), 10), 86, 4)
        lut.set(L_OCC_C, (30, 30, 32), 124, 3)
    elif kind == "box":
        w = W * (0.45 + 0.3 * size)
        h = S * (0.24 + 0.2 * size)
        x0 = cx + (0.05 + 0.25 * abs(pos)) * W * (1 if pos >= 0 else -1) - w / 2
        rect(d, x0, fy + 0.02 * S - h, x0 + w, H + 5, L_OCC_A, 0.01 * S)
        rect(d, x0 - 0.01 * W, fy + 0.02 * S - h, x0 + w + 0.01 * W, fy + 0.06 * S - h, L_OCC_B)
        colors = [(124, 88, 52), (46, 104, 60), (48, 72, 140), (96, 98, 102)]
        lut.set(L_OCC_A, jit(rng, colors[int(rng.integers(len(colors)))]), 78, 6)
        lut.set(L_OCC_B, lut.rgb[L_OCC_A] * 0.7, 74, 4)
    else:  # board: a sign or another object in front of the upper body
        w = W * (0.45 + 0.3 * size)
        h = S * (0.2 + 0.15 * size)
        bxc = cx + (0.18 + 0.2 * abs(pos)) * W * (1 if pos >= 0 else -1)
        byc = fy - S * (0.55 + 0.2 * size)
        rect(d, bxc - w / 2, byc - h / 2, bxc + w / 2, byc + h / 2, L_OCC_B, 0.01 * S)
        m = 0.02 * S
        rect(d, bxc - w / 2 + m, byc - h / 2 + m, bxc + w / 2 - m, byc + h / 2 - m, L_OCC_A)
        rect(d, bxc - 0.015 * S, byc + h / 2, bxc + 0.015 * S, H, L_OCC_B)
        colors = [(236, 236, 230), (232, 200, 40), (40, 80, 170), (200, 50, 40)]
        lut.set(L_OCC_A, jit(rng, colors[int(rng.integers(len(colors)))], 10), 72, 3)
        lut.set(L_OCC_B, jit(rng, (70, 72, 76), 10), 68, 3)
