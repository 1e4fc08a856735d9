"""VI-ReID test protocols: modes and per-trial query / gallery draws from a ``VITestSet`` alone.

Every index below is a position in ``VITestSet.images`` (the order features are extracted in).

* ``sysumm01`` (SYSU-MM01): queries are every image of the infrared cameras 3 and 6. Gallery
  candidates are the visible cameras 1, 2, 4, 5 (all-search) or 1, 2 (indoor-search); a trial
  keeps ``shots`` of them per (identity, camera): 1 (single-shot) or 10 (multi-shot, all of them
  when fewer). Modes ``all_single``, ``all_multi``, ``indoor_single``, ``indoor_multi``; camera
  rule ``"sysu"``; identity-once CMC; ``trials`` draws.
* ``regdb``: ``v2t`` (queries visible, gallery every thermal image) and ``t2v`` (the reverse);
  one trial (the dataset split is the trial, chosen when the dataset is read); no camera rule;
  plain CMC.
* ``llcm``: ``ir2vis`` (queries every infrared image, gallery one visible image per (identity,
  camera)) and ``vis2ir``; camera rule ``"same_cam_id"``; identity-once CMC; ``trials`` draws.
  ``vis2ir`` draws one infrared image per (identity, camera) and, in the ``"published"``
  convention (the default), ranks every visible image for each drawn infrared image: DEEN's
  ``test.py`` (ZYK100/LLCM, ``test_mode = [2, 1]``) calls ``eval_llcm(-(gall @ query.T),
  gall_label, query_label, gall_cam, query_cam)`` with ``gall`` the drawn infrared images and
  ``query`` every visible image, and every published LLCM VIS-to-IR figure comes from that call.
  The ``"literal"`` convention ranks the drawn infrared images for every visible query.

The draw of trial ``t`` (see :func:`draw_gallery`) is AGW's (``process_gallery_sysu`` in
mangye16/Cross-Modal-Re-ID-baseline ``data_manager.py``; DEEN's ``process_gallery_llcm`` draws
the same way), so that the ten galleries are the reference code's: ``random.seed(t)`` for
t = 0..trials-1 (the reference's ``for trial in range(10)``); identities visited in ascending
``%04d`` order, cameras in the protocol's order (SYSU-MM01 1, 2, 4, 5 or 1, 2; LLCM ascending),
each (identity, camera) folder's files sorted by name; ``random.choice`` of one file per folder.
Multi-shot has no Python reference (AGW, CAJ and DEEN draw single-shot only, and the official
MATLAB code's per-trial permutation cannot be reproduced in Python): it takes
``random.sample(files, min(10, len(files)))`` per folder with the same seed and visiting order.
Every mode starts its own generator, so a mode's draws do not depend on which other modes are
evaluated, and the global ``random`` state is left alone.
"""

from __future__ import annotations

import os
import random
from typing import NamedTuple

import numpy as np

__all__ = [
    "LLCM_VIS2IR_CONVENTIONS",
    "VITrial",
    "draw_gallery",
    "protocol_modes",
    "protocol_trials",
]

SYSU_INFRARED_CAMS = (3, 6)
SYSU_ALL_CAMS = (1, 2, 4, 5)
SYSU_INDOOR_CAMS = (1, 2)
MULTI_SHOTS = 10
# "published": DEEN's swapped call (queries = the drawn infrared images, gallery = every visible
# image); "literal": queries = every visible image, gallery = the drawn infrared images.
LLCM_VIS2IR_CONVENTIONS = ("published", "literal")

# mode -> (gallery cameras, in the reference's visiting order; shots per (pid, camera))
_SYSU_MODES = {
    "all_single": (SYSU_ALL_CAMS, 1),
    "all_multi": (SYSU_ALL_CAMS, MULTI_SHOTS),
    "indoor_single": (SYSU_INDOOR_CAMS, 1),
    "indoor_multi": (SYSU_INDOOR_CAMS, MULTI_SHOTS),
}
# mode -> (query modality, gallery modality); LLCM's vis2ir as its literal reading (see above)
_REGDB_MODES = {"v2t": ("visible", "infrared"), "t2v": ("infrared", "visible")}
_LLCM_MODES = {"ir2vis": ("infrared", "visible"), "vis2ir": ("visible", "infrared")}

_MODES = {"sysumm01": _SYSU_MODES, "regdb": _REGDB_MODES, "llcm": _LLCM_MODES}


class VITrial(NamedTuple):
    """One evaluation run of a mode: which images are queries and gallery, and how to rank."""

    mode: str
    trial: int
    query: np.ndarray  # (Q,) int64 positions in VITestSet.images, ascending
    gallery: np.ndarray  # (G,) int64 positions in VITestSet.images, ascending
    camera_rule: str  # argument of vi_rank_metrics
    unique_ids: bool  # argument of vi_rank_metrics


def _check_protocol(test_set) -> str:
    protocol = test_set.protocol
    if protocol not in _MODES:
        raise ValueError(f"unknown VI-ReID protocol {protocol!r}; expected one of {list(_MODES)}")
    return protocol


def protocol_modes(test_set) -> list[str]:
    """The modes of the test set's protocol, the first being the one used for model selection."""
    return list(_MODES[_check_protocol(test_set)])


def draw_gallery(test_set, candidates, shots: int, seed: int, cameras=None) -> np.ndarray:
    """AGW's draw: ``shots`` random candidates per (pid, camid) with ``random.Random(seed)``.

    Groups are visited as the reference visits its folders: identities by their ``%04d`` name,
    then cameras in ``cameras`` order; a group's images sorted by file name. One image per group
    is ``choice``, more is ``sample(group, min(shots, len(group)))`` (see the module docstring).

    Args:
        test_set (VITestSet): the images the candidates index.
        candidates: (N,) positions in ``test_set.images``.
        shots: images kept per (pid, camid) group (all of a smaller group).
        seed: the trial number, 0-based.
        cameras: camera numbers in visiting order (default: ascending); every candidate's camera
            must be listed.

    Returns:
        (G,) int64 positions, ascending.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for index in np.asarray(candidates, dtype=np.int64).tolist():
        image = test_set.images[index]
        groups.setdefault((int(image.pid), int(image.camid)), []).append(index)
    if cameras is None:
        cameras = sorted({cam for _, cam in groups})
    unlisted = sorted({cam for _, cam in groups} - set(cameras))
    if unlisted:
        raise ValueError(f"gallery candidates from cameras {unlisted}, not in {list(cameras)}")
    rng = random.Random(seed)  # the stream of random.seed(seed) + random.choice / random.sample
    picks = []
    for pid in sorted({pid for pid, _ in groups}, key=lambda p: f"{p:04d}"):
        for cam in cameras:
            members = groups.get((pid, cam))
            if not members:
                continue
            members = sorted(members, key=lambda i: (os.path.basename(test_set.images[i].path), i))
            if shots == 1:
                picks.append(rng.choice(members))
            else:
                picks.extend(rng.sample(members, min(shots, len(members))))
    return np.asarray(sorted(picks), dtype=np.int64)


def _where(test_set, keep) -> np.ndarray:
    return np.asarray([i for i, image in enumerate(test_set.images) if keep(image)], dtype=np.int64)


def protocol_trials(
    test_set, mode: str, trials: int = 10, llcm_vis2ir: str = "published"
) -> list[VITrial]:
    """The trials of one mode: ``trials`` seeded gallery draws (seeds 0..trials-1), or one trial
    for RegDB whatever ``trials`` says.

    Args:
        test_set (VITestSet): every test image once, with its protocol.
        mode: one of :func:`protocol_modes`.
        trials: number of gallery draws for SYSU-MM01 and LLCM.
        llcm_vis2ir: LLCM ``vis2ir`` convention: ``"published"`` (queries are the drawn infrared
            images, gallery every visible image, as DEEN's code evaluates it) or ``"literal"``
            (queries every visible image, gallery the drawn infrared images).
    """
    if llcm_vis2ir not in LLCM_VIS2IR_CONVENTIONS:
        raise ValueError(
            f"llcm_vis2ir must be one of {LLCM_VIS2IR_CONVENTIONS}, got {llcm_vis2ir!r}"
        )
    out = _trials(test_set, mode, trials, llcm_vis2ir)
    for trial in out:
        # An empty side means the items do not follow the protocol (camera numbers, modality
        # names): fail here rather than report zeros.
        for side in ("query", "gallery"):
            if len(getattr(trial, side)) == 0:
                raise ValueError(
                    f"{test_set.protocol} mode {mode!r} trial {trial.trial}: no {side} images"
                )
    return out


def _trials(test_set, mode: str, trials: int, llcm_vis2ir: str) -> list[VITrial]:
    protocol = _check_protocol(test_set)
    modes = _MODES[protocol]
    if mode not in modes:
        raise ValueError(f"unknown mode {mode!r} for protocol {protocol!r}; expected {list(modes)}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if protocol == "sysumm01":
        cams, shots = modes[mode]
        query = _where(test_set, lambda im: im.camid in SYSU_INFRARED_CAMS)
        candidates = _where(test_set, lambda im: im.camid in cams)
        return [
            VITrial(
                mode, t, query, draw_gallery(test_set, candidates, shots, t, cams), "sysu", True
            )
            for t in range(trials)
        ]
    q_modality, g_modality = modes[mode]
    query = _where(test_set, lambda im: im.modality == q_modality)
    candidates = _where(test_set, lambda im: im.modality == g_modality)
    if protocol == "regdb":
        return [VITrial(mode, 0, query, candidates, "none", False)]
    out = []
    for t in range(trials):
        drawn = draw_gallery(test_set, candidates, 1, t)
        if mode == "vis2ir" and llcm_vis2ir == "published":
            # DEEN's swapped call: eval_llcm(-(drawn @ every_visible.T), drawn_label,
            # visible_label, drawn_cam, visible_cam); the camera rule then drops, for each drawn
            # infrared image, the visible images with its identity and camera number.
            out.append(VITrial(mode, t, drawn, query, "same_cam_id", True))
        else:
            out.append(VITrial(mode, t, query, drawn, "same_cam_id", True))
    return out
