"""Procedural synthetic pedestrian benchmark (numpy + PIL only, deterministic from a seed).

Every identity is a set of attributes (gender, age, build, height, hair, garments, shoes, carried
item, hat; colours from a small shared palette): ``identities``. Each image of an identity is one
*view* (front / back / side, pose, scale, background scene, lighting challenge) rendered twice
from the same label map (``canvas``, ``scenes``, ``person``, ``rendering``): an RGB image and a
single-channel thermal image (a temperature map: skin warm, thin clothes warmer than coats,
carried items cold, background cool). Captions (``captions``) mention a random subset of the
attributes that are visible in that very render, and every caption has a colour-free twin.

Writers (``writers``, with the shared file steps in ``files``) stream images to disk in the
official layouts of RGBT-PEDES, CUHK-PEDES, RegDB, LLCM and SYSU-MM01 (see
``shared/DATASETS.md``); ``tools/make_synthetic.py`` is their command line.

``pretraining`` is the population a synthetic CLIP is pretrained on
(``tools/pretrain_synthetic_clip.py``): captioned RGB images, several varied captions each, of
identities drawn with their own seed and pid range, none equal to a benchmark identity.

Randomness: every random choice comes from ``numpy.random.default_rng`` seeded with a tuple
``(seed, pid, ...)``, so an identity, a view or a caption does not depend on the order in which
things are generated, and the same seed gives byte-identical files.

The package needs only numpy and PIL and imports nothing else of ``plugins``.
"""

from .captions import make_captions, tokenize
from .identities import (
    ALL_COLOR_WORDS,
    CHALLENGES,
    COLOR_NAMES,
    HAIR_COLOR_NAMES,
    OCCLUDERS,
    PALETTE,
    SCENES,
    VIEWS,
    Identity,
    ViewSpec,
    assign_splits,
    make_identity,
    sample_view,
)
from .pretraining import (
    PRETRAIN_PID_OFFSET,
    PRETRAIN_SEED,
    PretrainingSample,
    PretrainingSet,
    identity_key,
    pretraining_identity,
    reserved_identity_keys,
)
from .records import ImageRecord, contact_sheet, generate, make_record
from .rendering import Rendered, render
from .writers import (
    WRITERS,
    ensure_synthetic,
    write_cuhkpedes,
    write_llcm,
    write_regdb,
    write_rgbtpedes,
    write_sysumm01,
)

__all__ = [
    "ALL_COLOR_WORDS",
    "CHALLENGES",
    "COLOR_NAMES",
    "HAIR_COLOR_NAMES",
    "OCCLUDERS",
    "PALETTE",
    "PRETRAIN_PID_OFFSET",
    "PRETRAIN_SEED",
    "SCENES",
    "VIEWS",
    "WRITERS",
    "Identity",
    "ImageRecord",
    "PretrainingSample",
    "PretrainingSet",
    "Rendered",
    "ViewSpec",
    "assign_splits",
    "contact_sheet",
    "ensure_synthetic",
    "generate",
    "identity_key",
    "make_captions",
    "make_identity",
    "make_record",
    "pretraining_identity",
    "render",
    "reserved_identity_keys",
    "sample_view",
    "tokenize",
    "write_cuhkpedes",
    "write_llcm",
    "write_regdb",
    "write_rgbtpedes",
    "write_sysumm01",
]
