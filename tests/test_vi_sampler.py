"""Two-modality PK sampler: P x (K visible + K infrared) batches, reproducible, sharded, checked."""

import itertools
from collections import Counter

import numpy as np
import pytest

import plugins  # noqa: F401  (applies the fast-reid fixes)
from plugins.data.samplers import (
    ModalityIdentityBatchSampler,
    SamplerConfigError,
    build_sampler,
)
from plugins.engine.defaults import build_config


def make_items(seed=0, num_ids=20, lo=1, hi=9, shuffle=True):
    """(pids, modalities): every identity has lo..hi-1 visible and lo..hi-1 infrared items."""
    rng = np.random.default_rng(seed)
    items = []
    for pid in range(num_ids):
        for modality in ("visible", "infrared"):
            items += [(pid, modality)] * int(rng.integers(lo, hi))
    if shuffle:  # readers list by modality or camera: the sampler must not rely on the order
        items = [items[i] for i in rng.permutation(len(items))]
    return [p for p, _ in items], [m for _, m in items]


def take_batches(sampler, count, mini_batch):
    stream = list(itertools.islice(iter(sampler), count * mini_batch))
    return [stream[i * mini_batch : (i + 1) * mini_batch] for i in range(count)]


def check_layout(indices, pids, mods, p, k):
    """The mini-batch is P*K visible (K per identity) then P*K infrared in the same order."""
    assert len(indices) == p * 2 * k
    half = p * k
    assert [mods[i] for i in indices] == ["visible"] * half + ["infrared"] * half
    ids = [pids[i] for i in indices]
    assert ids[:half] == ids[half:]
    blocks = [ids[j * k : (j + 1) * k] for j in range(p)]
    assert all(len(set(b)) == 1 for b in blocks)
    assert len({b[0] for b in blocks}) == p  # no identity twice in a batch


def test_batches_hold_p_identities_with_k_visible_and_k_infrared_and_no_repeats():
    pids, mods = make_items(lo=3, hi=9)  # every identity has at least K = 3 of each modality
    p, k = 4, 3
    sampler = ModalityIdentityBatchSampler(pids, mods, p * 2 * k, k, seed=1, rank=0, world_size=1)
    n_epoch = sampler.batches_in_epoch(0)
    assert n_epoch > 0
    for batch in take_batches(sampler, 3 * n_epoch, p * 2 * k):
        indices = [i for i, _ in batch]
        check_layout(indices, pids, mods, p, k)
        assert len(set(indices)) == len(indices)


def test_epoch_draws_every_item_of_each_identity_whose_turns_were_all_placed():
    pids, mods = make_items(seed=4, lo=3, hi=12)
    k = 3
    sampler = ModalityIdentityBatchSampler(pids, mods, 12, k, seed=0, rank=0, world_size=1)
    epoch = [b[0] for b in sampler.global_batches(0)]
    turns = Counter(pid for batch in epoch for pid in {pids[i] for i in batch})
    seen = {i for batch in epoch for i in batch}
    checked = 0
    for pid in set(pids):
        vis = [i for i, (q, m) in enumerate(zip(pids, mods)) if q == pid and m == "visible"]
        ir = [i for i, (q, m) in enumerate(zip(pids, mods)) if q == pid and m == "infrared"]
        wanted = max(-(-len(vis) // k), -(-len(ir) // k))
        assert turns[pid] <= wanted
        if turns[pid] == wanted:
            assert set(vis + ir) <= seen
            checked += 1
    assert checked >= len(set(pids)) // 2  # most identities are placed in full


def test_identities_short_of_k_repeat_only_their_own_items():
    # Identity 0 has 1 visible and 5 infrared items: its visible slot repeats that one image.
    pids = [0] + [0] * 5 + [p for p in range(1, 6) for _ in range(4)]
    mods = ["visible"] + ["infrared"] * 5 + ["visible", "visible", "infrared", "infrared"] * 5
    k = 2
    sampler = ModalityIdentityBatchSampler(pids, mods, 8, k, seed=3, rank=0, world_size=1)
    with_short = 0
    for batch in take_batches(sampler, 4 * sampler.batches_in_epoch(0), 8):
        indices = [i for i, _ in batch]
        check_layout(indices, pids, mods, 2, k)
        repeats = [i for i, n in Counter(indices).items() if n > 1]
        assert repeats in ([], [0])
        if 0 in indices:
            with_short += 1
            assert Counter(indices)[0] == k
    assert with_short > 0


def test_single_modality_identities_are_never_drawn():
    pids, mods = make_items(num_ids=10, lo=2, hi=5)
    pids += [99, 99, 99]
    mods += ["visible"] * 3
    sampler = ModalityIdentityBatchSampler(pids, mods, 8, 2, seed=0, rank=0, world_size=1)
    assert sampler.single_modality == [99]
    drawn = {i for batch in take_batches(sampler, 30, 8) for i, _ in batch}
    assert not drawn & {len(pids) - 3, len(pids) - 2, len(pids) - 1}


def test_stream_is_reproducible_from_the_seed_and_resumes_exactly():
    pids, mods = make_items(lo=2, hi=7)

    def make(seed=5):
        return ModalityIdentityBatchSampler(pids, mods, 8, 2, seed=seed, rank=0, world_size=1)

    full = take_batches(make(), 40, 8)
    assert full == take_batches(make(), 40, 8)
    assert full != take_batches(make(seed=6), 40, 8)
    assert make().batches_in_epoch(0) < 40  # the stream crosses epochs
    resumed = make()
    resumed.set_start(17)
    assert take_batches(resumed, 23, 8) == full[17:]
    seeds = [s for batch in full for _, s in batch]
    assert len(set(seeds)) == len(seeds)
    # Epochs draw different orders.
    assert [i for i, _ in full[0]] != [i for i, _ in full[make().batches_in_epoch(0)]]


def test_two_processes_get_disjoint_whole_identities():
    pids, mods = make_items(num_ids=30, lo=2, hi=8)
    p, k = 2, 2

    def make(rank):
        return ModalityIdentityBatchSampler(
            pids, mods, 2 * p * 2 * k, k, seed=1, rank=rank, world_size=2
        )

    assert make(0).batches_in_epoch(0) == make(1).batches_in_epoch(0) > 0
    ranks = [take_batches(make(r), 12, p * 2 * k) for r in range(2)]
    for b in range(12):
        a, c = ([i for i, _ in ranks[r][b]] for r in range(2))
        check_layout(a, pids, mods, p, k)
        check_layout(c, pids, mods, p, k)
        assert not set(a) & set(c)
        assert not {pids[i] for i in a} & {pids[i] for i in c}
        # Per-sample seeds are those of one global batch, cut between the processes.
        assert not {s for _, s in ranks[0][b]} & {s for _, s in ranks[1][b]}


def sampler_cfg(*opts):
    return build_config(
        opts=["MODEL.DEVICE", "cpu", "DATALOADER.SAMPLER_TRAIN", "ModalityIdentitySampler", *opts]
    )


@pytest.mark.parametrize(
    "opts, num_ids, message",
    [
        # 12 per batch is not a multiple of 2 x K = 8.
        (["SOLVER.IMS_PER_BATCH", "12", "DATALOADER.NUM_INSTANCE", "4"], 20,
         "multiple of 2 x DATALOADER.NUM_INSTANCE=8"),
        (["DATALOADER.NUM_INSTANCE", "0"], 20, "NUM_INSTANCE=0"),
        # 64 per batch at 2 + 2 per identity needs 16 identities; the set has 10.
        (["SOLVER.IMS_PER_BATCH", "64", "DATALOADER.NUM_INSTANCE", "2"], 10,
         "16 identities per process .* 10 identities with items of both modalities"),
    ],
)  # fmt: skip
def test_batches_that_cannot_be_filled_stop_with_a_message(opts, num_ids, message):
    pids, mods = make_items(num_ids=num_ids, lo=2, hi=6)
    with pytest.raises(SamplerConfigError, match=message):
        build_sampler(sampler_cfg(*opts), pids, mods)


def test_build_sampler_needs_modalities_and_builds_the_two_modality_sampler():
    pids, mods = make_items(num_ids=20, lo=2, hi=6)
    cfg = sampler_cfg("SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_INSTANCE", "2", "SEED", "3")
    sampler = build_sampler(cfg, pids, mods)
    assert isinstance(sampler, ModalityIdentityBatchSampler)
    assert sampler.num_ids_per_batch == 4 and sampler.seed == 3
    with pytest.raises(SamplerConfigError, match="needs items with a modality"):
        build_sampler(cfg, pids)
    with pytest.raises(SamplerConfigError, match="unknown modalities"):
        ModalityIdentityBatchSampler(pids, ["thermal"] * len(pids), 16, 2, 0, 0, 1)


# ---------------------------------------------------------------------------------------------
# What an epoch is (DATALOADER.VI_EPOCH)
# ---------------------------------------------------------------------------------------------
# Published training sets (tools/dataset_stats.py): visible, infrared images and identities;
# (AGW's two-modality epoch, fast-reid's epoch) in batches of 64 = 8 identities x (4 + 4).
PUBLISHED = {
    "SYSUMM01": ((22258, 11909, 395), (696, 533)),
    "LLCM": ((16946, 13975, 713), (530, 483)),
    "RegDB": ((2060, 2060, 206), (65, 64)),
}


def published_items(n_vis, n_ir, num_ids):
    pids = [i % num_ids for i in range(n_vis)] + [i % num_ids for i in range(n_ir)]
    return pids, ["visible"] * n_vis + ["infrared"] * n_ir


def agw_batches(n_vis, n_ir, p, k):
    """Batches in one epoch of AGW's IdentitySampler (Cross-Modal-Re-ID-baseline, utils.py):
    ``for j in range(int(N / (batchSize * num_pos)) + 1)`` draws batchSize identities x num_pos
    images of each modality, ``N = max(len(color labels), len(thermal labels))``."""
    n = max(n_vis, n_ir)
    return len(range(int(n / (p * k)) + 1))


def fake_loader(sampler, size):
    from types import SimpleNamespace

    return SimpleNamespace(dataset=range(size), batch_sampler=SimpleNamespace(sampler=sampler))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_vi_epoch_counts_as_agws_two_modality_sampler(name):
    from plugins.engine.trainer import epoch_iterations

    (n_vis, n_ir, num_ids), (agw, fastreid) = PUBLISHED[name]
    pids, mods = published_items(n_vis, n_ir, num_ids)
    sampler = ModalityIdentityBatchSampler(pids, mods, 64, 4, seed=0, rank=0, world_size=1)
    assert sampler.epoch_iterations() == agw == agw_batches(n_vis, n_ir, p=8, k=4)
    loader = fake_loader(sampler, len(pids))
    cfg = sampler_cfg("SOLVER.IMS_PER_BATCH", "64", "DATALOADER.VI_EPOCH", "sampler")
    assert epoch_iterations(cfg, loader) == agw
    images = sampler_cfg("SOLVER.IMS_PER_BATCH", "64")  # the default: fast-reid's
    assert images.DATALOADER.VI_EPOCH == "images"
    assert epoch_iterations(images, loader) == fastreid == (n_vis + n_ir) // 64
    # Another batch: 16 = 2 identities x (4 + 4), AGW's count with P K = 8.
    small = ModalityIdentityBatchSampler(pids, mods, 16, 4, seed=0, rank=0, world_size=1)
    assert small.epoch_iterations() == agw_batches(n_vis, n_ir, p=2, k=4)


def test_vi_epoch_of_random_batches_and_errors():
    from plugins.data.samplers import RandomBatchSampler
    from plugins.engine.trainer import epoch_iterations

    cfg = sampler_cfg("SOLVER.IMS_PER_BATCH", "32", "DATALOADER.VI_EPOCH", "sampler")
    random = RandomBatchSampler(100, 32, seed=0, rank=0, world_size=1)
    assert random.epoch_iterations() == random.batches_in_epoch(0) == 3
    assert epoch_iterations(cfg, fake_loader(random, 100)) == 3
    with pytest.raises(ValueError, match="VI_EPOCH images"):
        epoch_iterations(cfg, fake_loader(object(), 100))  # fast-reid's own loaders
    bad = sampler_cfg("DATALOADER.VI_EPOCH", "iterations")
    with pytest.raises(ValueError, match="DATALOADER.VI_EPOCH 'iterations'"):
        epoch_iterations(bad, fake_loader(random, 100))


def test_stage_warm_up_counts_the_vi_epoch():
    """A stage's warm-up in epochs, under fast-reid's per-iteration schedule, is epochs x the
    epoch DATALOADER.VI_EPOCH defines, not len(training set) // batch."""
    from types import SimpleNamespace

    from plugins.engine.stages import Stage, StageTrainer

    (n_vis, n_ir, num_ids), (agw, fastreid) = PUBLISHED["SYSUMM01"]
    pids, mods = published_items(n_vis, n_ir, num_ids)
    sampler = ModalityIdentityBatchSampler(pids, mods, 64, 4, seed=0, rank=0, world_size=1)
    stub = SimpleNamespace(
        stage=Stage("s", warmup_epochs=2.0), _loader=fake_loader(sampler, len(pids))
    )
    for mode, per_epoch in (("sampler", agw), ("images", fastreid)):
        cfg = sampler_cfg("SOLVER.IMS_PER_BATCH", "64", "DATALOADER.VI_EPOCH", mode,
                          "MODEL.HEADS.NUM_CLASSES", "395")  # fmt: skip
        cfg = StageTrainer.auto_scale_hyperparams(stub, cfg, 395)
        assert cfg.SOLVER.WARMUP_ITERS == 2 * per_epoch
