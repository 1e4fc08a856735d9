"""VI-ReID gallery draws and LLCM's VIS-to-IR convention against the reference code.

The references are re-implemented here from their description, on fixtures in the official
layouts: AGW's ``process_gallery_sysu`` (mangye16/Cross-Modal-Re-ID-baseline, ``data_manager.py``)
and DEEN's ``process_gallery_llcm`` (ZYK100/LLCM, ``DEEN/data_manager.py``) draw a trial's
gallery; DEEN's ``test.py`` evaluates LLCM VIS-to-IR (``test_mode = [2, 1]``) with
``eval_llcm(-(gall @ query.T), gall_label, query_label, gall_cam, query_cam)``, ``gall`` being the
drawn near-infrared images and ``query`` every visible image.
"""

import os
import random

import numpy as np
import pytest
import torch

import plugins  # noqa: F401  (applies the fastreid fixes, registers the readers)
from tests.fixtures_vi import write_llcm, write_sysumm01

# isort: split
from plugins.data.datasets.llcm import LLCM
from plugins.data.datasets.sysumm01 import SYSUMM01
from plugins.engine import PluginTrainer, build_config
from plugins.evaluation import VIReIDEvaluator
from plugins.evaluation.vi_protocols import protocol_trials
from tests.ranking_reference import vi_rank_reference

TRIALS = 10
METRICS = ("R1", "R5", "R10", "R20", "mAP", "mINP")

# Test ids listed out of order; cameras missing for some people; folders of 1 to 13 images, so
# that multi-shot both samples ten of a folder and takes a small folder whole.
SYSU_TEST = {
    40: {1: 3, 2: 2, 4: 7, 5: 9, 3: 3, 6: 2},
    3: {1: 5, 2: 13, 4: 3, 5: 1, 3: 2, 6: 1},
    12: {2: 6, 4: 11, 6: 2},
    7: {1: 12, 5: 4, 3: 1},
}
SYSU_SPLITS = {"train": "1", "val": "2", "test": "40,3,12,7"}
SYSU_GALLERY_CAMS = {"all": ["cam1", "cam2", "cam4", "cam5"], "indoor": ["cam1", "cam2"]}

# pid -> {(modality, camera): images}
LLCM_TEST = {
    25: {("vis", 1): 3, ("vis", 2): 2, ("vis", 7): 4, ("nir", 1): 3, ("nir", 2): 1, ("nir", 7): 2},
    3: {("vis", 1): 2, ("vis", 9): 5, ("nir", 1): 4, ("nir", 9): 3, ("nir", 4): 2},
    10: {("vis", 4): 3, ("vis", 5): 3, ("nir", 4): 5, ("nir", 5): 1},
    2: {("vis", 2): 6, ("vis", 8): 1, ("nir", 2): 2, ("nir", 8): 4, ("nir", 6): 1},
}
LLCM_FOLDERS = {
    "vis": [f"test_vis/cam{c}" for c in range(1, 10)],
    "nir": [f"test_nir/cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9)],
}


def write_sysu_fixture(root):
    images = {1: {1: 1, 3: 1}, 2: {2: 1, 6: 1}, **SYSU_TEST}
    return write_sysumm01(root, images=images, splits=SYSU_SPLITS)


def write_llcm_fixture(root):
    test = {
        pid: [(mod, cam) for (mod, cam), n in groups.items() for _ in range(n)]
        for pid, groups in LLCM_TEST.items()
    }
    return write_llcm(root, test=test, test_ids="25,3,10,2")


def reference_draw(data_path, id_file, folders, trial, shots=1):
    """The reference's gallery of one trial, as paths in its order.

    ``random.seed(trial)``; the ids of ``id_file`` (one comma-separated line) as ``%04d``
    strings, sorted; for each id, each camera folder in list order that exists: its files,
    sorted, and ``random.choice`` of one (multi-shot: ``random.sample`` of min(shots, n)).
    """
    state = random.getstate()
    try:
        random.seed(trial)
        with open(os.path.join(data_path, id_file)) as f:
            ids = [f"{int(x):04d}" for x in f.read().splitlines()[0].split(",")]
        drawn = []
        for pid in sorted(ids):
            for folder in folders:
                img_dir = os.path.join(data_path, folder, pid)
                if os.path.isdir(img_dir):
                    files = sorted(img_dir + "/" + name for name in os.listdir(img_dir))
                    if shots == 1:
                        drawn.append(random.choice(files))
                    else:
                        drawn.extend(random.sample(files, min(shots, len(files))))
    finally:
        random.setstate(state)
    return [os.path.normpath(p) for p in drawn]


def paths(test_set, positions):
    return [os.path.normpath(test_set.images[i].path) for i in positions]


def eval_llcm_reference(distmat, q_pids, g_pids, q_camids, g_camids, ranks=(1, 5, 10, 20)):
    """DEEN's ``eval_llcm`` from its description (rows of ``distmat`` are its queries): drop the
    gallery items with the query's identity and camera, CMC over distinct identities in ranked
    order, AP and INP over the kept list, queries without a positive left out. A stable sort
    stands for the reference's argsort (the features here have no ties)."""
    cmc_hits = dict.fromkeys(ranks, 0.0)
    aps, inps = [], []
    for qi in range(distmat.shape[0]):
        order = np.argsort(distmat[qi], kind="stable")
        keep = ~((g_pids[order] == q_pids[qi]) & (g_camids[order] == q_camids[qi]))
        ranked = g_pids[order][keep]
        matches = ranked == q_pids[qi]
        if not matches.any():
            continue
        _, first = np.unique(ranked, return_index=True)
        identities = ranked[np.sort(first)]
        id_rank = int(np.flatnonzero(identities == q_pids[qi])[0]) + 1
        for k in ranks:
            cmc_hits[k] += id_rank <= k
        hit_ranks = np.flatnonzero(matches) + 1
        aps.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        inps.append(len(hit_ranks) / hit_ranks[-1])
    out = {f"R{k}": 100.0 * cmc_hits[k] / len(aps) for k in ranks}
    out.update(mAP=100.0 * np.mean(aps), mINP=100.0 * np.mean(inps))
    return out


def evaluate(evaluator, feats):
    evaluator.reset()
    index = torch.arange(len(feats))
    evaluator.process({"index": index}, torch.as_tensor(feats, dtype=torch.float32))
    return evaluator.evaluate()


def unit_features(n, seed, dim=8):
    feats = np.random.default_rng(seed).standard_normal((n, dim))
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def check_means(results, mode, per_trial):
    for key in METRICS:
        values = [r[key] for r in per_trial]
        assert results[f"{mode}/{key}"] == pytest.approx(np.mean(values), abs=1e-4), (mode, key)
        assert results[f"{mode}/{key}_std"] == pytest.approx(np.std(values), abs=1e-4), (mode, key)


# ------------------------------------------------------------------------------- SYSU-MM01
def test_sysu_galleries_are_agws_draws(tmp_path):
    base = write_sysu_fixture(tmp_path)
    ts = SYSUMM01(root=str(tmp_path), verbose=False).test
    for search in ("all", "indoor"):
        folders = SYSU_GALLERY_CAMS[search]
        for shots, kind in ((1, "single"), (10, "multi")):
            mode = f"{search}_{kind}"
            trials = protocol_trials(ts, mode, trials=TRIALS)
            galleries = set()
            for t, trial in enumerate(trials):
                # AGW's test.py: `for trial in range(10)`, process_gallery_sysu(trial=trial).
                assert trial.trial == t
                expected = reference_draw(base, "exp/test_id.txt", folders, t, shots)
                got = paths(ts, trial.gallery)
                if shots == 1:  # the reference's order too (identity, camera, file name)
                    assert got == expected, (mode, t)
                else:
                    assert sorted(got) == sorted(expected), (mode, t)
                galleries.add(tuple(got))
            assert len(galleries) > 1, mode  # the fixture tells draws apart
    # A multi-shot gallery keeps ten of a 13-image folder and the whole of a smaller one.
    gallery = paths(ts, protocol_trials(ts, "all_multi", trials=1)[0].gallery)
    per_folder = {}
    for p in gallery:
        per_folder[os.path.dirname(p)] = per_folder.get(os.path.dirname(p), 0) + 1
    assert per_folder[os.path.join(base, "cam2", "0003")] == 10
    assert per_folder[os.path.join(base, "cam1", "0003")] == 5


def test_sysu_evaluator_equals_the_reference_pipeline(tmp_path):
    base = write_sysu_fixture(tmp_path)
    ts = SYSUMM01(root=str(tmp_path), verbose=False).test
    feats = unit_features(len(ts.images), seed=1)
    by_path = {p: i for i, p in enumerate(paths(ts, range(len(ts.images))))}
    pids = np.asarray([im.pid for im in ts.images])
    cams = np.asarray([im.camid for im in ts.images])
    results = evaluate(VIReIDEvaluator(ts, trials=TRIALS), feats)
    query = [i for i, im in enumerate(ts.images) if im.camid in (3, 6)]
    per_trial = []
    for t in range(TRIALS):
        drawn = reference_draw(base, "exp/test_id.txt", SYSU_GALLERY_CAMS["all"], t)
        gallery = [by_path[p] for p in drawn]
        q, g = np.asarray(query), np.asarray(gallery)
        args = (feats[q], feats[g], pids[q], pids[g], cams[q], cams[g])
        per_trial.append(vi_rank_reference(*args, "sysu", True, (1, 5, 10, 20)))
    check_means(results, "all_single", per_trial)


# ------------------------------------------------------------------------------------ LLCM
def test_llcm_draws_are_deens_and_vis2ir_swaps_roles(tmp_path):
    base = write_llcm_fixture(tmp_path)
    ts = LLCM(root=str(tmp_path), verbose=False).test
    visible = [i for i, im in enumerate(ts.images) if im.modality == "visible"]
    infrared = [i for i, im in enumerate(ts.images) if im.modality == "infrared"]
    ir2vis = protocol_trials(ts, "ir2vis", trials=TRIALS)
    published = protocol_trials(ts, "vis2ir", trials=TRIALS)
    literal = protocol_trials(ts, "vis2ir", trials=TRIALS, llcm_vis2ir="literal")
    explicit = protocol_trials(ts, "vis2ir", TRIALS, "published")  # the default
    assert [t.query.tolist() for t in explicit] == [t.query.tolist() for t in published]
    for t in range(TRIALS):
        vis_draw = reference_draw(base, "idx/test_id.txt", LLCM_FOLDERS["vis"], t)
        nir_draw = reference_draw(base, "idx/test_id.txt", LLCM_FOLDERS["nir"], t)
        # test_mode [1, 2]: every near-infrared image queries the drawn visible gallery.
        assert ir2vis[t].trial == t and ir2vis[t].query.tolist() == infrared
        assert paths(ts, ir2vis[t].gallery) == vis_draw
        # test_mode [2, 1], as evaluated: the drawn near-infrared images query every visible one.
        assert published[t].trial == t and paths(ts, published[t].query) == nir_draw
        assert published[t].gallery.tolist() == visible
        # The literal reading: every visible image queries the drawn near-infrared images.
        assert literal[t].query.tolist() == visible
        assert paths(ts, literal[t].gallery) == nir_draw
        for trial in (ir2vis[t], published[t], literal[t]):
            assert (trial.camera_rule, trial.unique_ids) == ("same_cam_id", True)
    assert len({tuple(t.query.tolist()) for t in published}) > 1
    with pytest.raises(ValueError, match="llcm_vis2ir"):
        protocol_trials(ts, "vis2ir", llcm_vis2ir="swapped")


def test_llcm_evaluator_equals_deens_calls(tmp_path):
    base = write_llcm_fixture(tmp_path)
    ts = LLCM(root=str(tmp_path), verbose=False).test
    feats = unit_features(len(ts.images), seed=2)
    by_path = {p: i for i, p in enumerate(paths(ts, range(len(ts.images))))}
    pids = np.asarray([im.pid for im in ts.images])
    cams = np.asarray([im.camid for im in ts.images])
    vis = np.asarray([i for i, im in enumerate(ts.images) if im.modality == "visible"])
    nir = np.asarray([i for i, im in enumerate(ts.images) if im.modality == "infrared"])
    expected = {"ir2vis": [], "vis2ir": [], "literal": []}
    for t in range(TRIALS):
        vis_draw = np.asarray(
            [by_path[p] for p in reference_draw(base, "idx/test_id.txt", LLCM_FOLDERS["vis"], t)]
        )
        nir_draw = np.asarray(
            [by_path[p] for p in reference_draw(base, "idx/test_id.txt", LLCM_FOLDERS["nir"], t)]
        )
        # [1, 2]: query = every NIR image, gall = drawn VIS;
        #   eval_llcm(-(query @ gall.T), query_label, gall_label, query_cam, gall_cam).
        q, g = nir, vis_draw
        expected["ir2vis"].append(
            eval_llcm_reference(-(feats[q] @ feats[g].T), pids[q], pids[g], cams[q], cams[g])
        )
        # [2, 1]: query = every VIS image, gall = drawn NIR;
        #   eval_llcm(-(gall @ query.T), gall_label, query_label, gall_cam, query_cam).
        q, g = vis, nir_draw
        expected["vis2ir"].append(
            eval_llcm_reference(-(feats[g] @ feats[q].T), pids[g], pids[q], cams[g], cams[q])
        )
        expected["literal"].append(
            eval_llcm_reference(-(feats[q] @ feats[g].T), pids[q], pids[g], cams[q], cams[g])
        )
    results = evaluate(VIReIDEvaluator(ts, trials=TRIALS), feats)
    check_means(results, "ir2vis", expected["ir2vis"])
    check_means(results, "vis2ir", expected["vis2ir"])
    literal = evaluate(VIReIDEvaluator(ts, trials=TRIALS, llcm_vis2ir="literal"), feats)
    check_means(literal, "vis2ir", expected["literal"])
    assert literal["ir2vis/mAP"] == results["ir2vis/mAP"]
    # The two conventions are different protocols on this fixture.
    assert abs(literal["vis2ir/mAP"] - results["vis2ir/mAP"]) > 1.0


def test_llcm_vis2ir_key_reaches_the_evaluator(tmp_path, monkeypatch):
    write_llcm_fixture(tmp_path)
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    cfg = build_config(opts=["MODEL.DEVICE", "cpu", "TEST.VI_TRIALS", "2"])
    assert cfg.TEST.LLCM_VIS2IR == "published"
    modality = {}
    for convention in ("published", "literal"):
        cfg = build_config(
            opts=["MODEL.DEVICE", "cpu", "TEST.VI_TRIALS", "2", "TEST.LLCM_VIS2IR", convention]
        )
        _, evaluator = PluginTrainer.build_evaluator(cfg, "LLCM")
        trial = evaluator.trials["vis2ir"][0]
        modality[convention] = {evaluator.test_set.images[i].modality for i in trial.query}
    assert modality == {"published": {"infrared"}, "literal": {"visible"}}
