"""VI-ReID protocols (modes, query / gallery draws) and VIReIDEvaluator on hand-made features."""

import random

import numpy as np
import pytest
import torch

import plugins  # noqa: F401

# isort: split
from plugins.data.items import VIImage, VITestSet
from plugins.evaluation import VIReIDEvaluator
from plugins.evaluation.vi_protocols import draw_gallery, protocol_modes, protocol_trials
from tests.ranking_reference import vi_rank_reference

VISIBLE_SYSU = (1, 2, 4, 5)


def image(pid, camid, modality=None, name=""):
    if modality is None:  # SYSU-MM01 cameras
        modality = "infrared" if camid in (3, 6) else "visible"
    return VIImage(f"/data/{pid}_{camid}_{name}.jpg", pid, camid, modality)


def hand_set(protocol, *spec):
    """A test set of images given as ``(pid, camid)`` (SYSU-MM01 cameras: the camera decides the
    modality) or ``(pid, camid, "v" | "ir")``, in position order."""
    modality = {"v": "visible", "ir": "infrared"}
    return VITestSet(tuple(image(p, c, *map(modality.get, m)) for p, c, *m in spec), protocol)


def small_sysu():
    """pid 1: cam1 x12, cam2 x3, cam4 x1, cam3 x2, cam6 x1; pid 2: cam1, cam2 x2, cam5 x2, cam3,
    cam6; stored in a shuffled order so that positions differ from any grouping."""
    spec = [(1, 1)] * 12 + [(1, 2)] * 3 + [(1, 4), (1, 3), (1, 3), (1, 6)]
    spec += [(2, 1), (2, 2), (2, 2), (2, 5), (2, 5), (2, 3), (2, 6)]
    order = np.random.default_rng(0).permutation(len(spec))
    return VITestSet(tuple(image(*spec[i], name=str(i)) for i in order), "sysumm01")


def groups_of(test_set, indices):
    out = {}
    for i in indices.tolist():
        out.setdefault((test_set.images[i].pid, test_set.images[i].camid), []).append(i)
    return out


def test_sysu_modes_queries_and_galleries():
    ts = small_sysu()
    assert protocol_modes(ts) == ["all_single", "all_multi", "indoor_single", "indoor_multi"]
    infrared = [i for i, im in enumerate(ts.images) if im.camid in (3, 6)]
    sizes = {}
    for mode in protocol_modes(ts):
        trials = protocol_trials(ts, mode)
        assert len(trials) == 10 and [t.trial for t in trials] == list(range(10))
        for trial in trials:
            assert trial.query.tolist() == infrared  # every infrared image, every trial
            assert (trial.camera_rule, trial.unique_ids) == ("sysu", True)
            assert trial.gallery.tolist() == sorted(trial.gallery.tolist())
            groups = groups_of(ts, trial.gallery)
            cams = VISIBLE_SYSU if mode.startswith("all") else (1, 2)
            assert {c for _, c in groups} == set(cams)
            shots = 1 if mode.endswith("single") else 10
            available = groups_of(ts, np.arange(len(ts.images)))
            for key, members in groups.items():
                assert len(members) == min(shots, len(available[key]))
                assert set(members) <= set(available[key])
            sizes[mode] = len(trial.gallery)
    # single: one per (pid, camera); multi: ten of pid 1's twelve cam-1 images, all of the rest.
    assert sizes == {"all_single": 6, "all_multi": 19, "indoor_single": 4, "indoor_multi": 16}


def test_draws_are_the_documented_ones_reproducible_and_differ_across_trials():
    # 5 identities x 4 visible cameras x 15 images (+ one infrared image each).
    spec = [(p, c) for p in range(5) for c in VISIBLE_SYSU for _ in range(15)]
    spec += [(p, 3) for p in range(5)]
    ts = VITestSet(tuple(image(p, c, name=str(i)) for i, (p, c) in enumerate(spec)), "sysumm01")
    for mode, shots in [("all_single", 1), ("all_multi", 10)]:
        first, again = protocol_trials(ts, mode), protocol_trials(ts, mode)
        galleries = [tuple(t.gallery.tolist()) for t in first]
        assert galleries == [tuple(t.gallery.tolist()) for t in again]
        assert len(set(galleries)) == 10  # every trial draws another gallery
        for t in first:
            assert len(t.gallery) == 20 * shots
            # The documented draw (AGW's), written out: random.seed(trial); identities, then
            # cameras 1, 2, 4, 5; each group's files by name ("0_1_10.jpg" before "0_1_2.jpg",
            # so not in position order); choice (single-shot) or sample (multi-shot).
            rng = random.Random(t.trial)
            expected = []
            for p in range(5):
                for c in VISIBLE_SYSU:
                    members = [i for i, s in enumerate(spec) if s == (p, c)]
                    members.sort(key=lambda i: ts.images[i].path)
                    if shots == 1:
                        expected.append(rng.choice(members))
                    else:
                        expected += rng.sample(members, shots)
            assert t.gallery.tolist() == sorted(expected)
    assert len(protocol_trials(ts, "all_single", trials=3)) == 3
    # draw_gallery on its own: seeds decide, and a small group is taken whole.
    cands = np.arange(60)
    assert draw_gallery(ts, cands, 1, 4).tolist() == draw_gallery(ts, cands, 1, 4).tolist()
    assert draw_gallery(ts, cands, 20, 0).tolist() == list(range(60))


def test_regdb_one_trial_plain_cmc_no_rule():
    ims = [
        image(1, 1, "visible"),
        image(1, 2, "infrared"),
        image(2, 2, "infrared"),
        image(2, 1, "visible"),
    ]
    ts = VITestSet(tuple(ims), "regdb")
    assert protocol_modes(ts) == ["v2t", "t2v"]
    (v2t,) = protocol_trials(ts, "v2t", trials=10)
    assert (v2t.query.tolist(), v2t.gallery.tolist()) == ([0, 3], [1, 2])
    assert (v2t.camera_rule, v2t.unique_ids) == ("none", False)
    (t2v,) = protocol_trials(ts, "t2v")
    assert (t2v.query.tolist(), t2v.gallery.tolist()) == ([1, 2], [0, 3])


def test_llcm_one_image_per_identity_and_camera_same_cam_id():
    ims = [
        image(p, c, m, str(k))
        for p in (1, 2)
        for c in (1, 2, 4)
        for m in ("visible", "infrared")
        for k in range(3)
    ]
    ts = VITestSet(tuple(ims), "llcm")
    assert protocol_modes(ts) == ["ir2vis", "vis2ir"]
    # (mode, convention) -> (modality of every image of the query side, of the drawn side)
    for (mode, convention), (every, drawn) in {
        ("ir2vis", "published"): ("infrared", "visible"),
        ("ir2vis", "literal"): ("infrared", "visible"),
        # DEEN's VIS-to-IR: the drawn infrared images query every visible image.
        ("vis2ir", "published"): ("visible", "infrared"),
        ("vis2ir", "literal"): ("visible", "infrared"),
    }.items():
        trials = protocol_trials(ts, mode, llcm_vis2ir=convention)
        assert len(trials) == 10
        swapped = (mode, convention) == ("vis2ir", "published")
        for t in trials:
            assert (t.camera_rule, t.unique_ids) == ("same_cam_id", True)
            full, sample = (t.gallery, t.query) if swapped else (t.query, t.gallery)
            assert full.tolist() == [i for i, im in enumerate(ims) if im.modality == every]
            assert {ims[i].modality for i in sample} == {drawn}
            groups = groups_of(ts, sample)
            assert len(groups) == 6 and all(len(v) == 1 for v in groups.values())
        assert len({tuple((t.query if swapped else t.gallery).tolist()) for t in trials}) > 1


def test_protocol_errors():
    with pytest.raises(ValueError, match="protocol"):
        protocol_modes(VITestSet((image(1, 1),), "market"))
    ts = small_sysu()
    with pytest.raises(ValueError, match="mode"):
        protocol_trials(ts, "v2t")
    with pytest.raises(ValueError, match="trials"):
        protocol_trials(ts, "all_single", trials=0)
    # Thermal images not labelled "infrared": no query, a clear error instead of zeros.
    odd = VITestSet((image(1, 1, "visible"), image(1, 2, "thermal")), "regdb")
    with pytest.raises(ValueError, match="no gallery"):
        protocol_trials(odd, "v2t")


def run(evaluator, feats, batches):
    evaluator.reset()
    for batch in batches:  # out of order on purpose: the evaluator sorts by index
        index = torch.tensor(batch)
        evaluator.process({"index": index}, torch.as_tensor(feats, dtype=torch.float32)[index])
    return evaluator.evaluate()


def check(results, mode, expected):
    for key, value in expected.items():
        assert results[f"{mode}/{key}"] == pytest.approx(value, abs=1e-4), (mode, key)
        assert results[f"{mode}/{key}_std"] == pytest.approx(0.0, abs=1e-9), (mode, key)


def test_sysu_evaluator_by_hand():
    # Queries (both pid 1, feature e1): A from camera 3, B from camera 6. Gallery (pid, cam):
    # score with e1: (2, 2): 1.0; (1, 1) twice: 0.8; (2, 4): 0.6; (1, 5): 0.0.
    # all_single (one of the two tied (1, 1) images, same feature either way):
    #   A drops (2, 2): ranks p1 p2 p1 -> positives 1, 3: R1 100, AP 5/6, INP 2/3.
    #   B: p2 p1 p2 p1 -> positives 2, 4; identity rank 2: R1 0, AP 1/2, INP 1/2.
    #   means: R1 50, R5 100, R10 100, mAP 2/3, mINP 7/12.
    # all_multi (both (1, 1) images): A: p1 p1 p2 p1 -> 1, 2, 4: AP 11/12, INP 3/4;
    #   B: p2 p1 p1 p2 p1 -> 2, 3, 5: AP 53/90, INP 3/5. mAP 271/360, mINP 27/40.
    # indoor_single (cams 1, 2): A: p1 -> AP 1; B: p2 p1 -> AP 1/2. mAP = mINP = 3/4.
    # indoor_multi: A: p1 p1 -> AP 1, INP 1; B: p2 p1 p1 -> AP 7/12, INP 2/3.
    #   mAP 19/24, mINP 5/6.
    # Without the cam3/cam2 rule A would rank like B and every R1 would be 0.
    ts = hand_set("sysumm01", (1, 3), (2, 2), (1, 1), (1, 6), (2, 4), (1, 5), (1, 1))
    feats = [[1, 0], [1, 0], [0.8, 0.6], [1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6]]
    results = run(
        VIReIDEvaluator(ts, dataset_name="SYSUMM01"), feats, [[6, 2], [0], [5, 1, 3], [4]]
    )
    check(
        results,
        "all_single",
        {"R1": 50, "R5": 100, "R10": 100, "R20": 100, "mAP": 200 / 3, "mINP": 700 / 12},
    )
    # Every mode reports R1, R5, R10, R20 (as every reference test script prints), mAP, mINP.
    keys = ["R1", "R5", "R10", "R20", "mAP", "mINP"]
    for mode in ("all_single", "all_multi", "indoor_single", "indoor_multi"):
        assert [k for k in results if k.startswith(f"{mode}/")] == [
            *(f"{mode}/{k}" for k in keys),
            *(f"{mode}/{k}_std" for k in keys),
        ]
    check(results, "all_multi", {"R1": 50, "R10": 100, "mAP": 27100 / 360, "mINP": 67.5})
    check(results, "indoor_single", {"R1": 50, "R10": 100, "mAP": 75, "mINP": 75})
    check(results, "indoor_multi", {"R1": 50, "mAP": 1900 / 24, "mINP": 500 / 6})
    assert results["metric"] == results["R1"] == results["all_single/R1"]
    assert results["mAP"] == results["all_single/mAP"]
    assert results["mINP"] == results["all_single/mINP"]
    assert all(isinstance(v, float) for v in results.values())
    # Features are L2-normalised: scaling every feature changes nothing.
    scaled = run(VIReIDEvaluator(ts), 3.0 * np.asarray(feats), [list(range(7))])
    assert scaled == pytest.approx(results)


def test_regdb_evaluator_by_hand():
    # Visible (camera 1): v1 = pid 1 [1, 0], v2 = pid 2 [0, 1].
    # Thermal (camera 2): t1 = pid 1 [1, 0], t1b = pid 1 [0, 1], t2 = pid 2 [0.6, 0.8].
    # v2t: v1 -> t1 1, t2 .6, t1b 0: positives 1, 3: AP 5/6, INP 2/3, R1 hit.
    #      v2 -> t1b 1, t2 .8, t1 0: positive at 2: AP 1/2, INP 1/2.
    #      R1 50, R10 100, mAP 2/3, mINP 7/12.
    # t2v: t1 -> v1 first (hit); t1b -> v2 then v1 (rank 2, AP 1/2); t2 -> v2 .8 first (hit).
    #      R1 2/3, mAP = mINP = (1 + 1/2 + 1) / 3.
    ts = hand_set("regdb", (1, 1, "v"), (2, 1, "v"), (1, 2, "ir"), (1, 2, "ir"), (2, 2, "ir"))
    feats = [[1, 0], [0, 1], [1, 0], [0, 1], [0.6, 0.8]]
    ev = VIReIDEvaluator(ts, trials=10)
    results = run(ev, feats, [[4, 0], [3, 1, 2]])
    check(results, "v2t", {"R1": 50, "R10": 100, "mAP": 200 / 3, "mINP": 700 / 12})
    check(results, "t2v", {"R1": 200 / 3, "R10": 100, "mAP": 250 / 3, "mINP": 250 / 3})
    assert results["metric"] == results["v2t/R1"]
    assert [len(t) for t in ev.trials.values()] == [1, 1]


def test_llcm_evaluator_by_hand():
    # Infrared: a, a' = pid 1 cam 1 [0, 1] (one group of two equal images), b = pid 2 cam 2
    # [0.6, 0.8]. Visible: v1 = pid 1 cam 1 [0, 1], v2 = pid 1 cam 2 [0.6, 0.8], v3 = pid 2 cam 1
    # [1, 0]; one image per visible group, so every draw gives the same figures.
    # ir2vis (every infrared image against the visible draw, here every visible image):
    #   a, a': v1 dropped (same id and camera); v2 .8 (p1), v3 0 -> rank 1: AP 1 (twice).
    #   b: v2 1.0 (p1), v1 .8 (p1), v3 .6 (p2): identity rank 2, AP = INP = 1/3.
    #   R1 2/3, R5 100, mAP = mINP = 7/9.
    # vis2ir, published (DEEN's swapped call): the drawn infrared images (a or a', and b) against
    #   every visible image: the two rows above once each: R1 50, mAP = mINP = 2/3.
    # vis2ir, literal: every visible image against the drawn infrared images (a or a', b):
    #   v1: its only positive a has its camera -> skipped. v2: b 1.0 (p2), a .8 (p1) -> rank 2,
    #   AP 1/2. v3: b .6 (p2) first -> AP 1. R1 50, mAP = mINP = 75.
    spec = [(1, 1, "infrared"), (1, 1, "infrared"), (2, 2, "infrared")]
    spec += [(1, 1, "visible"), (1, 2, "visible"), (2, 1, "visible")]
    ims = tuple(image(p, c, m, str(k)) for k, (p, c, m) in enumerate(spec))
    ts = VITestSet(ims, "llcm")
    feats = [[0, 1], [0, 1], [0.6, 0.8], [0, 1], [0.6, 0.8], [1, 0]]
    results = run(VIReIDEvaluator(ts), feats, [[2], [4, 3], [1, 0], [5]])
    check(results, "ir2vis", {"R1": 200 / 3, "R5": 100, "mAP": 700 / 9, "mINP": 700 / 9})
    check(results, "vis2ir", {"R1": 50, "R5": 100, "mAP": 200 / 3, "mINP": 200 / 3})
    assert results["metric"] == pytest.approx(200 / 3)
    literal = run(VIReIDEvaluator(ts, llcm_vis2ir="literal"), feats, [list(range(6))])
    check(literal, "ir2vis", {"R1": 200 / 3, "mAP": 700 / 9})
    check(literal, "vis2ir", {"R1": 50, "R5": 100, "mAP": 75, "mINP": 75})
    with pytest.raises(ValueError, match="llcm_vis2ir"):
        VIReIDEvaluator(ts, llcm_vis2ir="reverse")


def test_means_and_stds_over_random_draws_match_per_trial_brute_force():
    rng = np.random.default_rng(3)
    spec = [(p, c) for p in range(4) for c in (1, 2, 3, 4, 5, 6) for _ in range(rng.integers(1, 4))]
    ts = VITestSet(tuple(image(p, c, name=str(i)) for i, (p, c) in enumerate(spec)), "sysumm01")
    feats = rng.standard_normal((len(spec), 6)).astype(np.float32)
    ev = VIReIDEvaluator(ts, trials=4)
    results = run(ev, feats, [list(range(len(spec)))[::-1]])
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    pids = np.array([p for p, _ in spec])
    cams = np.array([c for _, c in spec])
    for mode in ev.modes:
        per_trial = []
        for t in protocol_trials(ts, mode, trials=4):
            q, g = t.query, t.gallery
            args = (unit[q], unit[g], pids[q], pids[g], cams[q], cams[g])
            per_trial.append(vi_rank_reference(*args, "sysu", True, (1, 5, 10, 20)))
        for key in ("R1", "R5", "R10", "R20", "mAP", "mINP"):
            values = [r[key] for r in per_trial]
            assert results[f"{mode}/{key}"] == pytest.approx(np.mean(values), abs=1e-3)
            assert results[f"{mode}/{key}_std"] == pytest.approx(np.std(values), abs=1e-3)
    assert results["all_single/mAP_std"] > 0  # the draws do matter here


def test_missing_or_repeated_images_are_clear_errors():
    ts = small_sysu()
    feats = np.eye(len(ts.images), 4, dtype=np.float32) + 0.1
    ev = VIReIDEvaluator(ts, trials=2)
    n = len(ts.images)
    with pytest.raises(RuntimeError, match=rf"expected {n}.*1 missing \(first \[5\]\)"):
        run(ev, feats, [[i for i in range(n) if i != 5]])
    with pytest.raises(RuntimeError, match=r"1 repeated \(first \[2\]\)"):
        run(ev, feats, [list(range(n)), [2]])
    with pytest.raises(RuntimeError, match="outside"):
        run(ev, np.ones((n + 1, 4)), [list(range(n + 1))])
    # reset() clears what a failed evaluation collected.
    assert run(ev, feats, [list(range(n))])["metric"] >= 0
