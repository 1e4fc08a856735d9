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
  camera)) and ``vis2ir`` (the reverse); camera rule ``"same_cam_id"``; identity-once CMC;
  ``trials`` draws.

The draw of trial ``t`` (see :func:`draw_gallery`): ``rng = numpy.random.default_rng(t)``; the
candidates are grouped by (pid, camid), groups visited in ascending (pid, camid) order, each
group's indices in ascending order; from each group ``rng.choice(group, min(len(group), shots),
replace=False)``. The gallery is the union of the picks in ascending index order. Every mode
starts its own generator, so a mode's draws do not depend on which other modes are evaluated.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["VITrial", "draw_gallery", "protocol_modes", "protocol_trials"]

SYSU_INFRARED_CAMS = (3, 6)
SYSU_ALL_CAMS = (1, 2, 4, 5)
SYSU_INDOOR_CAMS = (1, 2)
MULTI_SHOTS = 10

# mode -> (gallery cameras, shots per (pid, camera))
_SYSU_MODES = {
    "all_single": (SYSU_ALL_CAMS, 1),
    "all_multi": (SYSU_ALL_CAMS, MULTI_SHOTS),
    "indoor_single": (SYSU_INDOOR_CAMS, 1),
    "indoor_multi": (SYSU_INDOOR_CAMS, MULTI_SHOTS),
}
# mode -> (query modality, gallery modality)
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


def draw_gallery(test_set, candidates, shots: int, seed: int) -> np.ndarray:
    """Up to ``shots`` random candidates per (pid, camid), drawn with ``default_rng(seed)``.

    Args:
        test_set (VITestSet): the images the candidates index.
        candidates: (N,) positions in ``test_set.images``.
        shots: images kept per (pid, camid) group (all of a smaller group).
        seed: the trial number.

    Returns:
        (G,) int64 positions, ascending.
    """
    candidates = np.sort(np.asarray(candidates, dtype=np.int64))
    groups: dict[tuple[int, int], list[int]] = {}
    for index in candidates.tolist():
        image = test_set.images[index]
        groups.setdefault((int(image.pid), int(image.camid)), []).append(index)
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.asarray(groups[key]), size=min(len(groups[key]), shots), replace=False)
        for key in sorted(groups)
    ]
    if not picks:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picks)).astype(np.int64)


def _where(test_set, keep) -> np.ndarray:
    return np.asarray([i for i, image in enumerate(test_set.images) if keep(image)], dtype=np.int64)


def protocol_trials(test_set, mode: str, trials: int = 10) -> list[VITrial]:
    """The trials of one mode: ``trials`` seeded gallery draws (seeds 0..trials-1), or one trial
    for RegDB whatever ``trials`` says.

    Args:
        test_set (VITestSet): every test image once, with its protocol.
        mode: one of :func:`protocol_modes`.
        trials: number of gallery draws for SYSU-MM01 and LLCM.
    """
    out = _trials(test_set, mode, trials)
    for trial in out:
        # An empty side means the items do not follow the protocol (camera numbers, modality
        # names): fail here rather than report zeros.
        for side in ("query", "gallery"):
            if len(getattr(trial, side)) == 0:
                raise ValueError(
                    f"{test_set.protocol} mode {mode!r} trial {trial.trial}: no {side} images"
                )
    return out


def _trials(test_set, mode: str, trials: int) -> list[VITrial]:
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
            VITrial(mode, t, query, draw_gallery(test_set, candidates, shots, t), "sysu", True)
            for t in range(trials)
        ]
    q_modality, g_modality = modes[mode]
    query = _where(test_set, lambda im: im.modality == q_modality)
    candidates = _where(test_set, lambda im: im.modality == g_modality)
    if protocol == "regdb":
        return [VITrial(mode, 0, query, candidates, "none", False)]
    return [
        VITrial(mode, t, query, draw_gallery(test_set, candidates, 1, t), "same_cam_id", True)
        for t in range(trials)
    ]
