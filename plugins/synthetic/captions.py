"""Template captions that mention the attributes visible in a render, with colour-free twins."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .identities import Identity, ViewSpec, choice

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
            choice(
                rng,
                ["slim", "thin", "slender"]
                if ident.build == "slim"
                else ["heavy-set", "stout", "heavy"],
            )
        )
    if rng.random() < 0.6:
        adjs.append(
            {"young": "young", "middle-aged": "middle-aged"}.get(ident.age)
            or choice(rng, ["elderly", "old", "older"])
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
    noun = choice(rng, nouns)
    subj_core = " ".join(adjs + [noun])

    # noun phrases
    hair_np = None
    if "hair" in chosen_set:
        if ident.hair == "bald":
            hair_np = "a bald head"
        else:
            length = choice(
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
        carry_loc = choice(rng, _CARRY_LOC[ident.carry]).format(poss=poss)
    clothes_txt = _join(clothes)

    def carry_clause() -> str:
        return " ".join(
            w for w in (choice(rng, _CARRY_VERB[ident.carry]), carry_np, carry_loc) if w
        )

    def wear_clause() -> str:
        return f"{choice(rng, _WEAR)} {clothes_txt}" if clothes else "is walking"

    def carry_sentence() -> str:  # " She carries ...", or nothing
        return f" {Pron} {carry_clause()}." if carry_np else ""

    def wearing() -> str:  # a participle phrase after the subject, or nothing
        return f" {choice(rng, _WEARING)} {clothes_txt}" if clothes else ""

    with_hair = f" with {hair_np}" if hair_np else ""
    template = int(rng.integers(5))
    if template == 0:
        s = f"{choice(rng, ['A', 'The'])} {subj_core}{with_hair} {wear_clause()}"
        if carry_np:
            s += f" and {carry_clause()}"
        s += "."
    elif template == 1:
        s = f"{choice(rng, ['The', 'This'])} {subj_core} {wear_clause()}."
        second = []
        if hair_np:
            second.append(f"has {hair_np}")
        if carry_np:
            second.append(carry_clause())
        if second:
            s += f" {Pron} " + " and ".join(second) + "."
    elif template == 2:
        s = f"A {subj_core}{with_hair}{wearing()}"
        if carry_np:
            s += f", {choice(rng, _CARRY_PART[ident.carry])} {carry_np}"
            if carry_loc:
                s += f" {carry_loc}"
        s += "."
    elif template == 3:
        s = f"The pedestrian is a {subj_core.replace(' pedestrian', '')}{wearing()}."
        if hair_np:
            s += f" {Pron} has {hair_np}."
        s += carry_sentence()
    else:
        opener = f"This {subj_core}"
        if hair_np:
            s = f"{opener} has {hair_np}"
            s += (
                f" and {choice(rng, ['is dressed in', 'is wearing'])} {clothes_txt}."
                if clothes
                else "."
            )
        else:
            s = f"{opener} {wear_clause()}."
        s += carry_sentence()
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
