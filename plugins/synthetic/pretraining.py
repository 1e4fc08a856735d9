"""A pretraining population for a synthetic CLIP: captioned RGB images of people no benchmark has.

CLIP was pretrained on web images and their alt-texts before anyone fine-tuned it for person
retrieval; ``tools/pretrain_synthetic_clip.py`` does the same for the tiny CLIPs of the synthetic
benchmark, on this population. Sample ``i`` of a :class:`PretrainingSet` is a pure function of
``i`` and the set's settings (no generation order, no state), so a training run can render its
images lazily, in any order, and reproduce exactly.

What the population is, and what makes it disjoint from every benchmark set:

- **Identities.** Identity ``j`` (from 0) is ``make_identity(PRETRAIN_PID_OFFSET + 1 + j,
  PRETRAIN_SEED)``: benchmark sets number their identities ``1..num_ids`` and draw them with
  their data seed (0 by default), so no (seed, pid) pair is shared. Attributes can still
  coincide by chance (about one identity in 20,000 has every attribute, height and skin tone
  included, of one of the 6,000 identities of data seeds 0-2); such an identity is redrawn, so
  no pretraining person looks exactly like a person of a benchmark set made with a data seed in
  ``RESERVED_SEEDS`` and at most ``RESERVED_IDS`` identities (``reserved_identity_keys``).
- **Renders.** Views come from ``sample_view`` with the pretraining seed and their own stream
  (``PRETRAIN_STREAM``), at the benchmark's render size (128 x 64), through the same JPEG
  quality as the dataset writers and the training transform's bilinear resize (``size``).
- **Images.** RGB, as CLIP saw, lit as photos on the web mostly are
  (``PRETRAIN_CHALLENGE_WEIGHTS``: 80 % normal, some low-light, over-exposed and occluded
  views, no near-black or colour-tinted ones: those are the benchmark's darkness and
  abnormal-illumination subsets, which fine-tuning with thermal images is for). A share
  (``grey_share``, 10 % by default) is converted to greyscale and captioned without colour words,
  as black-and-white photos are. No thermal image is used.
- **Captions.** Several per image (``captions_per_image``), each drawn independently, in
  alt-text styles (a short phrase, a list of attributes, a single item) naming a random subset
  of the visible attributes; ``template_share`` mixes in sentences of the benchmark's own
  templates (0 by default: CLIP saw alt-texts, not the annotations of person-retrieval
  datasets). The captions of one image differ in wording and in which attributes they name, so
  matching them to images needs the attributes, not a template.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .captions import (
    _CARRY_SYN,
    _HAT_SYN,
    _LOWER_SYN,
    _SHOES_SYN,
    _UPPER_SYN,
    _finish,
    _join,
    _np,
    make_captions,
)
from .identities import Identity, ViewSpec, choice, make_identity, sample_view, seeded_rng
from .rendering import render

#: Dataset seed of the pretraining population (benchmark sets use small seeds, 0 by default).
PRETRAIN_SEED = 271_828
#: Pretraining identity j has pid PRETRAIN_PID_OFFSET + 1 + j (benchmark pids run from 1).
PRETRAIN_PID_OFFSET = 1_000_000
#: ``sample_view`` stream of pretraining renders (the writers use 0 and 1).
PRETRAIN_STREAM = 9
#: Benchmark data seeds and identity counts whose people the population never reproduces.
RESERVED_SEEDS: tuple[int, ...] = (0, 1, 2)
RESERVED_IDS = 2000
#: Pid step of a redrawn identity (see ``pretraining_identity``).
_REDRAW_STEP = 100_000_000
#: Lighting of pretraining renders, as photos on the web are: mostly well lit, some dim,
#: over-exposed or partly hidden; none near-black or colour-tinted (the benchmark's darkness and
#: abnormal-illumination challenges, which its thermal images are there for).
PRETRAIN_CHALLENGE_WEIGHTS = {
    "normal": 0.8,
    "low_light": 0.1,
    "strong_light": 0.05,
    "occlusion": 0.05,
}
#: Render size of the benchmark writers, and their JPEG quality.
RENDER_SIZE = (128, 64)
JPEG_QUALITY = 92


def identity_key(identity: Identity) -> tuple:
    """Every attribute of an identity except its pid: two identities with equal keys look alike."""
    attributes = asdict(identity)
    attributes.pop("pid")
    return tuple(sorted(attributes.items()))


@functools.lru_cache(maxsize=4)
def reserved_identity_keys(
    seeds: tuple[int, ...] = RESERVED_SEEDS, num_ids: int = RESERVED_IDS
) -> frozenset:
    """Keys of identities ``1..num_ids`` of each benchmark data seed in ``seeds``."""
    return frozenset(
        identity_key(make_identity(pid, seed)) for seed in seeds for pid in range(1, num_ids + 1)
    )


def pretraining_identity(j: int, seed: int = PRETRAIN_SEED) -> Identity:
    """Identity ``j`` (from 0) of the pretraining population.

    Drawn as ``make_identity(PRETRAIN_PID_OFFSET + 1 + j, seed)``; one whose attributes equal a
    reserved benchmark identity's is redrawn at pid + k * 100,000,000 (k = 1, 2, ...).
    """
    reserved = reserved_identity_keys()
    pid = PRETRAIN_PID_OFFSET + 1 + int(j)
    identity = make_identity(pid, seed)
    while identity_key(identity) in reserved:
        pid += _REDRAW_STEP
        identity = make_identity(pid, seed)
    return identity


# ---------------------------------------------------------------------------------------------
# alt-text captions
# ---------------------------------------------------------------------------------------------
_PERSON_NOUNS = ("a person", "a pedestrian", "someone")
_ALT_OPENERS = ("a photo of", "an image of", "a picture of", "")


def _subject(identity: Identity, rng) -> str:
    """The subject of an alt-text: a man, a young woman, someone ... (no gender 3 times in 10)."""
    if rng.random() < 0.3:
        return choice(rng, _PERSON_NOUNS)
    if identity.gender == "man":
        nouns = ["man", "man", "guy"] if identity.age == "young" else ["man", "man", "gentleman"]
    else:
        nouns = (
            ["woman", "woman", "girl"] if identity.age == "young" else ["woman", "woman", "lady"]
        )
    noun = choice(rng, nouns)
    if rng.random() < 0.3:
        age = {"young": "young", "middle-aged": "middle-aged"}.get(identity.age, "elderly")
        noun = f"{age} {noun}"
    return f"a {noun}"


def _attribute_phrases(identity: Identity, visible: Sequence[str], rng, colours: bool) -> dict:
    """One noun phrase per visible attribute (colour words only with ``colours``)."""

    def colour(name):
        return name if colours else None

    out = {}
    if "hair" in visible:
        if identity.hair == "bald":
            out["hair"] = "a bald head"
        else:
            length = (
                "short"
                if identity.hair == "short"
                else choice(rng, ["long", "long", "shoulder-length"])
            )
            hair_colour = f" §{identity.hair_color}§" if colours and identity.hair_color else ""
            out["hair"] = f"{length}{hair_colour} hair"
    if "hat" in visible:
        out["hat"] = _np(rng, _HAT_SYN[identity.hat], colour(identity.hat_color))
    if "upper" in visible:
        out["upper"] = _np(rng, _UPPER_SYN[identity.upper], colour(identity.upper_color))
    if "lower" in visible:
        out["lower"] = _np(rng, _LOWER_SYN[identity.lower], colour(identity.lower_color))
    if "shoes" in visible:
        out["shoes"] = _np(rng, _SHOES_SYN, colour(identity.shoes_color), allow_pair=False)
    if "carry" in visible:
        out["carry"] = _np(rng, _CARRY_SYN[identity.carry], colour(identity.carry_color))
    return out


def alt_caption(
    identity: Identity, spec: ViewSpec, visible: Sequence[str], rng, colours: bool = True
) -> str:
    """One alt-text-like caption of a render: a phrase or an attribute list naming two or three
    attributes, or a single item.

    Only attributes in ``visible`` are named; ``colours`` False names no colour (greyscale
    images).
    """
    del spec  # the view is not described in alt-texts
    phrases = _attribute_phrases(identity, visible, rng, colours)
    names = list(phrases)
    if not names:
        return _finish(f"a photo of {_subject(identity, rng)}.")[0]
    order = [names[i] for i in rng.permutation(len(names))]
    style = int(rng.integers(3))
    subject = _subject(identity, rng)
    if style == 2 or len(order) == 1:  # a single item
        name = order[0]
        phrase = phrases[name]
        if name == "hair":
            text = f"{subject} with {phrase}"
        elif name == "carry":
            text = f"{subject} {choice(rng, ['carrying', 'with'])} {phrase}"
        else:
            text = f"{subject} {choice(rng, ['wearing', 'in'])} {phrase}"
        opener = choice(rng, _ALT_OPENERS)
        text = f"{opener} {text}" if opener else text
    else:
        count = int(rng.integers(2, min(3, len(order)) + 1))  # alt-texts are short
        chosen = order[:count]
        if style == 0:  # a phrase: hair and carried item with "with", garments with "wearing"
            worn = [phrases[n] for n in chosen if n not in ("hair", "carry")]
            other = [phrases[n] for n in chosen if n in ("hair", "carry")]
            text = subject
            if other:
                text += f" with {_join(other)}"
            if worn:
                text += f" {choice(rng, ['wearing', 'in', 'dressed in'])} {_join(worn)}"
            opener = choice(rng, _ALT_OPENERS)
            text = f"{opener} {text}" if opener else text
        else:  # an attribute list, articles dropped
            items = [phrases[n].removeprefix("a pair of ") for n in chosen]
            items = [p.removeprefix("a ").removeprefix("an ") for p in items]
            text = ", ".join([subject.removeprefix("a ")] + items)
    return _finish(text + ".")[0]


def pretraining_captions(
    identity: Identity,
    spec: ViewSpec,
    visible: Sequence[str],
    rng,
    n: int,
    colours: bool = True,
    template_share: float = 0.0,
) -> list[str]:
    """``n`` captions of one render, each a benchmark-style sentence (probability
    ``template_share``) or an alt-text; colour-free when ``colours`` is False."""
    captions = []
    for _ in range(n):
        if rng.random() < template_share:
            coloured, plain = make_captions(identity, spec, visible, rng, 1)
            captions.append(coloured[0] if colours else plain[0])
        else:
            captions.append(alt_caption(identity, spec, visible, rng, colours))
    return captions


# ---------------------------------------------------------------------------------------------
# the indexable population
# ---------------------------------------------------------------------------------------------
@dataclass
class PretrainingSample:
    """One captioned pretraining image."""

    index: int
    pid: int
    view_index: int  # 1-based image index within the identity
    image: Image.Image  # RGB (a greyscale image is stored as RGB with equal channels)
    captions: list[str]
    grey: bool
    challenge: str
    identity: Identity
    spec: ViewSpec


class PretrainingSet:
    """The pretraining population, indexable: sample ``i`` is identity ``first_identity + i //
    images_per_id``, view ``i % images_per_id + 1``, rendered and captioned from seeds alone.

    Args:
        num_images: samples in the set.
        images_per_id: views of each identity (consecutive samples).
        first_identity: index of the set's first identity; sets with non-overlapping identity
            ranges (a training and a validation set) share no person.
        size: (H, W) the image is resized to (bilinear, as the training transform); None keeps
            the render size.
        captions_per_image: captions drawn for each image.
        grey_share: probability that an image is greyscale (with colour-free captions).
        template_share: probability that a caption is a sentence of the benchmark's templates
            rather than an alt-text.
        challenge_weights: lighting challenge -> weight; default ``PRETRAIN_CHALLENGE_WEIGHTS``.
        seed: the population's dataset seed.
    """

    def __init__(
        self,
        num_images: int,
        images_per_id: int = 2,
        first_identity: int = 0,
        size: tuple[int, int] | None = (64, 32),
        captions_per_image: int = 4,
        grey_share: float = 0.1,
        template_share: float = 0.0,
        challenge_weights: dict[str, float] | None = None,
        seed: int = PRETRAIN_SEED,
    ):
        if num_images < 1 or images_per_id < 1 or captions_per_image < 1:
            raise ValueError("num_images, images_per_id and captions_per_image must be positive")
        self.num_images = int(num_images)
        self.images_per_id = int(images_per_id)
        self.first_identity = int(first_identity)
        self.size = tuple(size) if size else None
        self.captions_per_image = int(captions_per_image)
        self.grey_share = float(grey_share)
        self.template_share = float(template_share)
        self.challenge_weights = dict(challenge_weights or PRETRAIN_CHALLENGE_WEIGHTS)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.num_images

    @property
    def num_identities(self) -> int:
        return -(-self.num_images // self.images_per_id)

    def identity_range(self) -> range:
        """Indices j of the identities this set draws (``pretraining_identity(j)``)."""
        return range(self.first_identity, self.first_identity + self.num_identities)

    def __getitem__(self, i: int) -> PretrainingSample:
        if not 0 <= i < self.num_images:
            raise IndexError(i)
        identity = pretraining_identity(self.first_identity + i // self.images_per_id, self.seed)
        view_index = i % self.images_per_id + 1
        spec = sample_view(
            identity,
            view_index,
            self.seed,
            challenge_weights=self.challenge_weights,
            stream=PRETRAIN_STREAM,
        )
        out = render(identity, spec, *RENDER_SIZE, modalities=("rgb",))
        rng = seeded_rng(self.seed, identity.pid, view_index, 2, PRETRAIN_STREAM)
        grey = bool(rng.random() < self.grey_share)
        captions = pretraining_captions(
            identity,
            spec,
            out.visible,
            rng,
            self.captions_per_image,
            colours=not grey,
            template_share=self.template_share,
        )
        image = _as_stored(out.rgb, grey)
        if self.size:
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        return PretrainingSample(
            index=i,
            pid=identity.pid,
            view_index=view_index,
            image=image,
            captions=captions,
            grey=grey,
            challenge=spec.challenge,
            identity=identity,
            spec=spec,
        )

    def __iter__(self):
        for i in range(self.num_images):
            yield self[i]

    def samples(self, indices: Iterable[int]):
        return [self[int(i)] for i in indices]


def _as_stored(image: Image.Image, grey: bool) -> Image.Image:
    """The image as the dataset writers store it (JPEG at their quality), read back as RGB."""
    if grey:
        image = image.convert("L")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def image_array(sample: PretrainingSample) -> np.ndarray:
    """(H, W, 3) uint8 array of a sample's image."""
    return np.asarray(sample.image, dtype=np.uint8)
