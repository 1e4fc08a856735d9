"""The pedestrian: body, garments, hair, hat and carried items drawn into the label map."""

from __future__ import annotations

import math

import numpy as np

from .canvas import (
    L_BAG,
    L_EYE,
    L_HAIR,
    L_HANDLE,
    L_HAT,
    L_HEADSKIN,
    L_LOWER,
    L_LOWER_SHADE,
    L_SHOES,
    L_SKIN,
    L_SKIN_SHADE,
    L_STRAP,
    L_UPPER,
    L_UPPER_DETAIL,
    L_UPPER_SHADE,
    Luts,
    disc,
    jit,
    lerp,
    limb,
    point_at,
    rect,
)
from .identities import HAIR_RGB, PALETTE, SKIN_TONES, Identity, ViewSpec

BUILD_SCALE = {"slim": 0.88, "average": 1.0, "heavy": 1.2}

# Thermal "temperatures" on the 0..255 output scale.
_UPPER_TEMP = {"t-shirt": 190.0, "dress": 184.0, "shirt": 178.0, "jacket": 152.0, "coat": 130.0}
_LOWER_TEMP = {"shorts": 180.0, "skirt": 174.0, "trousers": 164.0}


def draw_person(d, ident: Identity, spec: ViewSpec, cx: float, fy: float, S: float) -> None:
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
            knee = point_at(hip, ang, 0.235 * k)
            legs.append((hip, knee, point_at(knee, shin, 0.225 * k), near))
    else:
        spread = 2.0 + abs(spec.leg_swing) * 0.2
        lift = 0.025 * S * abs(spec.leg_swing) / 26.0
        step_side = 1 if spec.leg_swing > 0 else -1
        for s in (-1, 1):
            hip = (cx + s * min(0.048 * S * bm, hw - 0.03 * S), Y(0.5))
            ay = Y(0.955) - (lift if s == step_side else 0.0)
            ax = hip[0] + s * math.tan(math.radians(spread)) * (ay - hip[1])
            legs.append((hip, lerp(hip, (ax, ay), 0.5), (ax, ay), True))

    def draw_leg(hip, knee, ankle, near):
        skin_l = L_SKIN if near else L_SKIN_SHADE
        low_l = L_LOWER if near else L_LOWER_SHADE
        wk = (lw0 + lw1) / 2
        if low == "trousers":
            limb(d, hip, knee, lw0, wk, low_l)
            limb(d, knee, ankle, wk, lw1 * 1.1, low_l)
        else:
            limb(d, hip, knee, lw0 * 0.92, wk * 0.88, skin_l)
            limb(d, knee, ankle, wk * 0.88, lw1 * 0.9, skin_l)
            if low == "shorts":
                limb(d, hip, lerp(hip, knee, 0.62), lw0 * 1.08, lw0 * 1.02, low_l)
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
        elbow = point_at(sh, a_up, 0.2 * S)
        wrist = point_at(elbow, a_fore, 0.17 * S)
        if long_sleeves:
            limb(d, sh, elbow, w0, w1, sleeve)
            limb(d, elbow, wrist, w1, w2, sleeve)
        else:
            limb(d, sh, elbow, w0 * 0.82, w1 * 0.82, skin_l)
            limb(d, elbow, wrist, w1 * 0.82, w2 * 0.82, skin_l)
            limb(d, sh, lerp(sh, elbow, 0.5), w0 * 1.05, w0, sleeve)
        hand = point_at(wrist, a_fore, 0.022 * S)
        disc(d, hand, 0.024 * S, skin_l)
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
        rect(d, hcx - hr - 0.014 * S, Y(0.01), hcx + hr + 0.014 * S, Y(0.27), L_HAIR, 0.03 * S)
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
            rect(d, cx - hw, Y(0.44), cx + hw, Y(0.56), L_LOWER)
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
        rect(d, cx - sw - 0.1 * S, Y(0.185), cx - sw + 0.02 * S, Y(0.45), L_BAG, 0.025 * S)

    # --- neck and torso -------------------------------------------------------------------
    rect(d, hcx - 0.024 * S, Y(0.1), hcx + 0.024 * S, Y(0.17), L_SKIN)
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
                rect(d, cx + s * 0.03 * S, Y(0.44), cx + s * 0.07 * S, Y(0.455), L_UPPER_DETAIL)
        elif up == "coat":
            for s in (-1, 1):
                d.polygon(
                    [(cx + s * 0.045 * S, Y(0.148)), (cx, Y(0.31)), (cx + s * 0.075 * S, Y(0.22))],
                    L_UPPER_DETAIL,
                )
            d.line([(cx, Y(0.3)), (cx, bottom)], fill=L_UPPER_DETAIL, width=line_w)
            rect(d, cx - ww * 1.02, Y(0.43), cx + ww * 1.02, Y(0.45), L_UPPER_DETAIL)
    elif back:
        if up == "coat":
            d.line([(cx, Y(0.55)), (cx, bottom)], fill=L_UPPER_DETAIL, width=line_w)
            rect(d, cx - ww * 1.02, Y(0.43), cx + ww * 1.02, Y(0.45), L_UPPER_DETAIL)
        elif up == "jacket":
            rect(d, cx - hw, bottom - 0.025 * S, cx + hw, bottom, L_UPPER_DETAIL)
    elif up in ("coat", "jacket"):
        d.line(
            [(cx + sw * 0.9, Y(0.2)), (cx + bw * 0.75, bottom)], fill=L_UPPER_DETAIL, width=line_w
        )

    # --- backpack from behind, straps ---------------------------------------------------------
    if ident.carry == "backpack":
        if back:
            rect(d, cx - sw * 0.72, Y(0.19), cx + sw * 0.72, Y(0.45), L_BAG, 0.03 * S)
            rect(d, cx - sw * 0.5, Y(0.35), cx + sw * 0.5, Y(0.44), L_STRAP, 0.015 * S)
        elif front:
            for s in (-1, 1):
                limb(
                    d,
                    (cx + s * sw * 0.55, Y(0.16)),
                    (cx + s * sw * 0.62, Y(0.34)),
                    0.026 * S,
                    0.024 * S,
                    L_STRAP,
                )
        else:
            limb(
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
                    disc(d, (hcx + s * hr * 0.92, Y(0.065)), 0.014 * S, L_HAIR, 0.02 * S)
        else:
            d.ellipse(big, fill=L_HAIR)
            d.ellipse(
                [hcx - hr + 0.004 * S, Y(0.03), hcx + hr - 0.004 * S, Y(0.128)], fill=L_HEADSKIN
            )
        for s in (-1, 1):
            disc(d, (hcx + s * 0.021 * S, Y(0.064)), 0.0075 * S, L_EYE)
    elif back:
        d.ellipse(head_box, fill=L_HEADSKIN)
        if hair == "short":
            d.chord(big, 150, 30, fill=L_HAIR)
        elif hair == "long":
            d.ellipse(big, fill=L_HAIR)
            rect(d, hcx - hr - 0.012 * S, Y(0.05), hcx + hr + 0.012 * S, Y(0.28), L_HAIR, 0.03 * S)
        elif ident.age != "young":
            d.chord(head_box, 20, 160, fill=L_HAIR)
            d.chord(head_box, 40, 140, fill=L_HEADSKIN)
    else:
        if hair == "bald":
            d.ellipse(head_box, fill=L_HEADSKIN)
            if ident.age != "young":
                disc(d, (hcx - hr * 0.6, Y(0.075)), 0.018 * S, L_HAIR, 0.022 * S)
        else:
            d.ellipse(big, fill=L_HAIR)
            d.ellipse([hcx - hr * 0.3, Y(0.032), hcx + hr + 0.002 * S, Y(0.128)], fill=L_HEADSKIN)
            if hair == "long":
                rect(d, hcx - hr - 0.008 * S, Y(0.04), hcx - 0.004 * S, Y(0.26), L_HAIR, 0.02 * S)
        disc(d, (hcx + hr + 0.003 * S, Y(0.076)), 0.011 * S, L_HEADSKIN)
        disc(d, (hcx + hr * 0.55, Y(0.062)), 0.0075 * S, L_EYE)
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
        rect(d, hcx - hr - 0.003 * S, Y(-0.04), hcx + hr + 0.003 * S, Y(0.035), L_HAT, 0.02 * S)
        d.ellipse([hcx - hr * 1.8, Y(0.018), hcx + hr * 1.8, Y(0.046)], fill=L_HAT)

    # --- carried items in front of the body ------------------------------------------------
    hand = hands[-1]
    if ident.carry == "handbag":
        hx, hy = hand
        for s in (-1, 1):
            limb(d, (hx + s * 0.03 * S, hy + 0.04 * S), (hx, hy), 0.012 * S, 0.012 * S, L_STRAP)
        rect(d, hx - 0.05 * S, hy + 0.035 * S, hx + 0.05 * S, hy + 0.115 * S, L_BAG, 0.012 * S)
    elif ident.carry == "shoulder bag":
        if side:
            a0, bx = (cx + sw * 0.2, Y(0.155)), cx - 0.01 * S
        else:
            s = 1 if front else -1
            a0, bx = (cx - s * sw * 0.62, Y(0.158)), cx + s * (hw + 0.022 * S)
        limb(d, a0, (bx, Y(0.49)), 0.017 * S, 0.017 * S, L_STRAP)
        rect(d, bx - 0.048 * S, Y(0.47), bx + 0.048 * S, Y(0.56), L_BAG, 0.01 * S)
    elif ident.carry == "umbrella":
        hx, hy = hand
        top = (hx, hy + 0.03 * S)
        tip = (hx + 0.05 * S, fy - 0.045 * S)
        dxu, dyu = tip[0] - top[0], tip[1] - top[1]
        n = math.hypot(dxu, dyu) or 1.0
        nx, ny = -dyu / n * 0.03 * S, dxu / n * 0.03 * S
        mid = lerp(top, tip, 0.3)
        limb(d, (hx - 0.012 * S, hy - 0.02 * S), top, 0.012 * S, 0.012 * S, L_HANDLE)
        d.polygon([top, (mid[0] + nx, mid[1] + ny), tip, (mid[0] - nx, mid[1] - ny)], L_BAG)
        limb(d, tip, (tip[0] + 0.004 * S, fy), 0.01 * S, 0.008 * S, L_HANDLE)


def lum(rgb) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def _detail_color(rgb: np.ndarray) -> np.ndarray:
    return rgb * 0.62 if lum(rgb) > 70 else np.clip(rgb * 1.6 + 40, 0, 255)


def person_luts(ident: Identity, lut: Luts, rng: np.random.Generator, toffset: float) -> None:
    def col(name, jitter=10.0):
        return jit(rng, PALETTE[name], jitter) if name else np.zeros(3, np.float32)

    def warm(name):  # dark fabric is a little warmer
        return 0.0 if name is None else 6.0 * (0.5 - lum(PALETTE[name]) / 255.0)

    skin = jit(rng, SKIN_TONES[ident.skin_tone], 6)
    t = toffset
    lut.set(L_SKIN, skin, 222 + t, 3)
    lut.set(L_HEADSKIN, skin, 226 + t, 3)
    lut.set(L_SKIN_SHADE, skin * 0.78, 216 + t, 3)
    lut.set(L_EYE, (40, 30, 28), 206 + t, 1)
    hair_name = ident.hair_color or ("grey" if ident.age == "elderly" else "black")
    lut.set(L_HAIR, jit(rng, HAIR_RGB[hair_name], 8), 150 + t, 10)
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
