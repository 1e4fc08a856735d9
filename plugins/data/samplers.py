"""Training samplers: random caption batches (IRRA's), identity (PK) batches and two-modality PK
batches for visible-infrared re-identification.

All are infinite streams of ``(index, sample_seed)`` built epoch by epoch:

- each epoch's order comes from its own generator seeded by ``(seed, epoch)``, so the stream does
  not depend on anything drawn before it (evaluation, a restart);
- ``sample_seed`` (from ``(seed, epoch, batch)``) seeds that sample's augmentation and masking,
  so a batch is the same whichever worker process builds it;
- the stream can start at any batch (``set_start``): a resumed run sees exactly the batches the
  uninterrupted run would have seen;
- an epoch is a list of global batches of ``batch_size`` items; with several processes each
  global batch is cut into one mini-batch per process (whole identities for PK batches), and a
  batch never holds one item twice.

``check_batches`` runs before training: a batch that can never be filled stops the run with a
message saying what to change (fast-reid's identity sampler would wait forever).
"""

import logging
from collections import defaultdict, deque

import numpy as np
from fastreid.utils import comm
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

__all__ = [
    "IdentityBatchSampler",
    "ModalityIdentityBatchSampler",
    "RandomBatchSampler",
    "SamplerConfigError",
    "build_sampler",
]

# fast-reid's sampler names are accepted and mean the plugin's sampler of the same kind.
SAMPLER_NAMES = {
    "RandomSampler": "random",
    "TrainingSampler": "random",
    "IdentitySampler": "identity",
    "NaiveIdentitySampler": "identity",
    "ModalityIdentitySampler": "modality_identity",
}


class SamplerConfigError(ValueError):
    """The batch configuration cannot be served by the training set."""


class EpochBatchSampler(Sampler):
    """Base of the plugin's training samplers: an endless stream of ``(index, sample_seed)``.

    Subclasses define ``epoch_batches(rng)``: the epoch's mini-batches as lists of item indices,
    ``world_size`` consecutive mini-batches forming one global batch.

    Args:
        batch_size (int): global batch size (all processes together).
        seed (int): base seed of every epoch's order; None draws one shared by all processes.
        rank, world_size (int): this process and the number of processes (default: from
            ``torch.distributed``).
    """

    def __init__(self, batch_size, seed=None, rank=None, world_size=None):
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        if batch_size <= 0 or batch_size % self.world_size:
            raise SamplerConfigError(
                f"SOLVER.IMS_PER_BATCH={batch_size} must be a positive multiple of the number of "
                f"processes ({self.world_size})."
            )
        self.batch_size = batch_size
        self.mini_batch = batch_size // self.world_size
        self.seed = int(comm.shared_random_seed() if seed is None or seed < 0 else seed)
        self.start_batch = 0
        self._lengths = {}

    def epoch_batches(self, rng):
        raise NotImplementedError

    def global_batches(self, epoch):
        """Epoch ``epoch`` as a list of global batches, each a list of ``world_size`` mini-batches."""
        minis = self.epoch_batches(np.random.default_rng([self.seed, epoch]))
        count = len(minis) // self.world_size
        return [minis[i * self.world_size : (i + 1) * self.world_size] for i in range(count)]

    def epoch_iterations(self):
        """Training iterations the trainer counts as one epoch with ``DATALOADER.VI_EPOCH
        sampler`` (the stream itself is endless, and an epoch of its order may differ)."""
        raise NotImplementedError

    def batches_in_epoch(self, epoch):
        if epoch not in self._lengths:
            self._lengths[epoch] = len(self.global_batches(epoch))
        return self._lengths[epoch]

    def set_start(self, batch):
        """Start the stream at global batch ``batch`` (the batches a run has consumed)."""
        self.start_batch = int(batch)

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        self.seed = int(state["seed"])
        self._lengths = {}

    def _locate(self, batch):
        """(epoch, batch within epoch) of global batch number ``batch``."""
        epoch = 0
        while batch >= self.batches_in_epoch(epoch):
            batch -= self.batches_in_epoch(epoch)
            epoch += 1
        return epoch, batch

    def __iter__(self):
        epoch, first = self._locate(self.start_batch)
        while True:
            batches = self.global_batches(epoch)
            for b in range(first, len(batches)):
                seeds = np.random.default_rng([self.seed, epoch, b]).integers(
                    0, 2**63 - 1, self.batch_size
                )
                offset = self.rank * self.mini_batch
                for slot, index in enumerate(batches[b][self.rank]):
                    yield int(index), int(seeds[offset + slot])
            epoch, first = epoch + 1, 0

    def check_batches(self):
        """Raise ``SamplerConfigError`` when not one global batch can be formed."""
        if self.batches_in_epoch(0) == 0:
            raise SamplerConfigError(self.shortage())

    def shortage(self):
        raise NotImplementedError

    def _pack(self, pending, pid_of, place, size, finish):
        """Mini-batches packed from the deque ``pending`` so that an identity is at most once in
        a global batch: each process holds its own whole identities.

        Args:
            pending (deque): entries in drawing order.
            pid_of: entry -> its identity.
            place: (mini-batch being built, entry) -> the part of the entry that did not fit, or
                ``None``; it adds the rest to the mini-batch.
            size (int): the length at which the mini-batch being built is complete.
            finish: complete mini-batch -> its list of item indices.

        An entry of an identity already in the global batch, and the part of one that did not
        fit, waits for the next global batch; what is still waiting when ``pending`` runs out is
        left out of the epoch.
        """
        batches, current, in_batch, deferred = [], [], set(), []
        while pending:
            entry = pending.popleft()
            pid = pid_of(entry)
            if pid in in_batch:
                deferred.append(entry)
                continue
            rest = place(current, entry)
            in_batch.add(pid)
            if rest is not None:
                deferred.append(rest)
            if len(current) == size:
                batches.append(finish(current))
                current = []
                if len(batches) % self.world_size == 0:
                    in_batch = set()
                    pending.extendleft(reversed(deferred))
                    deferred = []
        return batches


class RandomBatchSampler(EpochBatchSampler):
    """Uniformly shuffled items, as IRRA trains (``shuffle=True``); the last partial batch of an
    epoch is dropped, so no batch holds an item twice.

    Args:
        num_items (int): training set size.
        batch_size, seed, rank, world_size: see ``EpochBatchSampler``.
    """

    def __init__(self, num_items, batch_size, seed=None, rank=None, world_size=None):
        super().__init__(batch_size, seed, rank, world_size)
        self.num_items = num_items

    def epoch_batches(self, rng):
        order = rng.permutation(self.num_items)
        count = self.num_items // self.mini_batch
        return [order[i * self.mini_batch : (i + 1) * self.mini_batch] for i in range(count)]

    def epoch_iterations(self):
        """One pass over the items: ``num_items // batch_size`` (the last partial batch dropped)."""
        return self.num_items // self.batch_size

    def shortage(self):
        return (
            f"SOLVER.IMS_PER_BATCH={self.batch_size} is larger than the training set "
            f"({self.num_items} items): lower SOLVER.IMS_PER_BATCH."
        )


class IdentityBatchSampler(EpochBatchSampler):
    """PK batches: mini-batches of ``mini_batch / K`` identities with ``K`` items each.

    Per epoch every identity's items are shuffled and cut into groups of ``K`` (a last partial
    group is dropped, unless the identity has fewer than ``K`` items: then it comes with the ones
    it has); the groups are shuffled and packed into batches that never hold one item twice and
    hold each identity in one process's mini-batch only. What cannot be placed by the end of an
    epoch is left out of it.

    Args:
        pids (list[int]): identity of each training item.
        batch_size (int): global batch size.
        num_instances (int): K, items per identity in a batch.
        seed, rank, world_size: see ``EpochBatchSampler``.
    """

    def __init__(self, pids, batch_size, num_instances, seed=None, rank=None, world_size=None):
        super().__init__(batch_size, seed, rank, world_size)
        if num_instances <= 0:
            raise SamplerConfigError(
                f"DATALOADER.NUM_INSTANCE={num_instances}: identity batches need at least one "
                "item per identity (IRRA-style configs use DATALOADER.SAMPLER_TRAIN RandomSampler)."
            )
        if self.mini_batch % num_instances:
            raise SamplerConfigError(
                f"SOLVER.IMS_PER_BATCH={batch_size} over {self.world_size} process(es) gives "
                f"{self.mini_batch} items per process, not a multiple of DATALOADER.NUM_INSTANCE="
                f"{num_instances}: make the per-process batch a multiple of NUM_INSTANCE."
            )
        self.num_instances = num_instances
        self.pids = np.asarray(pids)
        groups = defaultdict(list)
        for index, pid in enumerate(pids):
            groups[int(pid)].append(index)
        self.index_by_pid = {pid: np.asarray(indices) for pid, indices in sorted(groups.items())}

    def epoch_batches(self, rng):
        k = self.num_instances
        chunks = []
        for pid in rng.permutation(list(self.index_by_pid)):
            items = rng.permutation(self.index_by_pid[int(pid)])
            full = len(items) // k
            if full == 0:
                chunks.append(items)
            chunks.extend(items[i * k : (i + 1) * k] for i in range(full))
        pending = deque(chunks[i] for i in rng.permutation(len(chunks)))

        def place(current, chunk):
            # A group that does not fit the rest of a mini-batch gives it its head; the tail
            # waits, with groups of identities already in the batch, for the next global batch.
            space = self.mini_batch - len(current)
            current.extend(chunk[:space].tolist())
            return chunk[space:] if len(chunk) > space else None

        return self._pack(
            pending, lambda chunk: int(self.pids[chunk[0]]), place, self.mini_batch, list
        )

    def epoch_iterations(self):
        """fast-reid's epoch: ``len(pids) // batch_size``."""
        return len(self.pids) // self.batch_size

    def shortage(self):
        k = self.num_instances
        sizes = [len(v) for v in self.index_by_pid.values()]
        return (
            f"one batch of SOLVER.IMS_PER_BATCH={self.batch_size} (DATALOADER.NUM_INSTANCE={k}, "
            f"so {self.mini_batch // k} identities per process and batch) cannot be formed: the "
            f"training set has {len(sizes)} identities and {sum(sizes)} items "
            f"({sum(s >= k for s in sizes)} identities with at least {k}). Lower "
            "SOLVER.IMS_PER_BATCH, or use more identities."
        )


#: How ModalityIdentityBatchSampler draws: "cover" (every item at least once an epoch) or "agw".
MODALITY_DRAWS = ("cover", "agw")


class ModalityIdentityBatchSampler(EpochBatchSampler):
    """Two-modality PK batches: per process, ``P`` identities with ``K`` visible and ``K`` infrared
    items each (``mini_batch = P * 2K``), as VI-ReID methods train (RSBA, IJCAI'25: "P identities
    and K visible and K infrared images of each identity").

    Layout of a mini-batch: the ``P * K`` visible items, identity by identity, then the ``P * K``
    infrared items in the same identity order; item ``i`` and item ``i + P * K`` share an identity
    (the visible / infrared pairs some losses take).

    Epoch: every identity with items of both modalities takes part ``max(ceil(n_vis / K),
    ceil(n_ir / K))`` times, so each of its items is drawn at least once. For each modality the
    identity's items are shuffled and dealt ``K`` at a time; when fewer than ``K`` remain, they are
    completed from a fresh shuffle that leaves them out, so a group never holds one item twice
    when the identity has at least ``K`` items of that modality. An identity with ``n < K`` items of
    a modality gives all ``n`` plus ``K - n`` drawn again at random with replacement (the usual
    VI-ReID practice), so the batch keeps its ``P x (K + K)`` shape and only then repeats an item.
    The identities' turns are shuffled and packed so that an identity is at most once in a global
    batch: each process holds its own whole identities. Turns that cannot be placed by the end of
    an epoch are left out of it. Identities with items of one modality only are never drawn.
    ``draw="agw"`` (``DATALOADER.MODALITY_DRAW``) is AGW's ``IdentitySampler`` instead: every
    batch draws ``P`` identities without replacement and ``K`` items of each modality *with*
    replacement, ``epoch_iterations()`` batches an epoch.
    This epoch orders the stream; the trainer's epoch (``DATALOADER.VI_EPOCH``) is fast-reid's
    or AGW's count (:meth:`epoch_iterations`), and the stream runs across its boundaries.

    Args:
        pids (list[int]): identity of each training item.
        modalities (list[str]): ``"visible"`` or ``"infrared"`` per item.
        batch_size (int): global batch size (all processes), ``world_size * P * 2K``.
        num_instances (int): K, items per identity *and modality* in a batch
            (``DATALOADER.NUM_INSTANCE``).
        seed, rank, world_size: see ``EpochBatchSampler``.
    """

    def __init__(
        self,
        pids,
        modalities,
        batch_size,
        num_instances,
        seed=None,
        rank=None,
        world_size=None,
        draw="cover",
    ):
        super().__init__(batch_size, seed, rank, world_size)
        if draw not in MODALITY_DRAWS:
            raise SamplerConfigError(f"DATALOADER.MODALITY_DRAW={draw!r} not in {MODALITY_DRAWS}")
        self.draw = draw
        if num_instances <= 0:
            raise SamplerConfigError(
                f"DATALOADER.NUM_INSTANCE={num_instances}: two-modality identity batches need at "
                "least one visible and one infrared item per identity."
            )
        if self.mini_batch % (2 * num_instances):
            raise SamplerConfigError(
                f"SOLVER.IMS_PER_BATCH={batch_size} over {self.world_size} process(es) gives "
                f"{self.mini_batch} items per process, not a multiple of 2 x DATALOADER."
                f"NUM_INSTANCE={2 * num_instances} (K visible + K infrared per identity): make "
                "the per-process batch P * 2 * NUM_INSTANCE."
            )
        if len(pids) != len(modalities):
            raise ValueError(f"{len(pids)} pids but {len(modalities)} modalities")
        unknown = set(modalities) - {"visible", "infrared"}
        if unknown:
            raise SamplerConfigError(
                f"unknown modalities {sorted(unknown)}: items must be 'visible' or 'infrared'."
            )
        self.num_instances = num_instances
        self.num_ids_per_batch = self.mini_batch // (2 * num_instances)
        self.num_visible = sum(m == "visible" for m in modalities)
        self.num_infrared = len(modalities) - self.num_visible
        groups = defaultdict(lambda: ([], []))
        for index, (pid, modality) in enumerate(zip(pids, modalities)):
            groups[int(pid)][modality == "infrared"].append(index)
        self.index_by_pid = {
            pid: (np.asarray(vis), np.asarray(ir))
            for pid, (vis, ir) in sorted(groups.items())
            if vis and ir
        }
        self.single_modality = sorted(pid for pid, (vis, ir) in groups.items() if not (vis and ir))
        if self.single_modality:
            logger.warning(
                f"{len(self.single_modality)} training identities have items of one modality "
                "only and are never drawn by the two-modality sampler"
            )

    def _groups(self, rng, items, count):
        """``count`` groups of ``K`` of ``items``, distinct in a group when ``len(items) >= K``."""
        k, n = self.num_instances, len(items)
        if n < k:
            return [
                np.concatenate([rng.permutation(items), rng.choice(items, k - n)])
                for _ in range(count)
            ]
        groups, pool = [], rng.permutation(items)
        for _ in range(count):
            if len(pool) >= k:
                groups.append(pool[:k])
                pool = pool[k:]
                continue
            # The rest of this shuffle, completed from the next one without those items: the
            # next shuffle is the rest followed by the remaining items in random order.
            need = k - len(pool)
            fresh = rng.permutation(items)
            fresh = fresh[~np.isin(fresh, pool)]
            groups.append(np.concatenate([pool, fresh[:need]]))
            pool = fresh[need:]
        return groups

    def _agw_epoch_batches(self, rng):
        """AGW's ``IdentitySampler``: each global batch draws its identities without replacement,
        then ``K`` visible and ``K`` infrared items of each with replacement; the epoch holds
        ``epoch_iterations()`` global batches."""
        k, p = self.num_instances, self.num_ids_per_batch
        pids = np.asarray(list(self.index_by_pid))
        batches = []
        for _ in range(self.epoch_iterations()):
            chosen = rng.choice(pids, p * self.world_size, replace=False)
            for r in range(self.world_size):
                mine = chosen[r * p : (r + 1) * p]
                vis = [rng.choice(self.index_by_pid[int(pid)][0], k) for pid in mine]
                ir = [rng.choice(self.index_by_pid[int(pid)][1], k) for pid in mine]
                batches.append([int(i) for g in vis + ir for i in g])
        return batches

    def epoch_batches(self, rng):
        if self.draw == "agw":
            if len(self.index_by_pid) < self.num_ids_per_batch * self.world_size:
                return []
            return self._agw_epoch_batches(rng)
        k, p = self.num_instances, self.num_ids_per_batch
        turns, groups = [], {}
        for pid in rng.permutation(list(self.index_by_pid)):
            pid = int(pid)
            vis, ir = self.index_by_pid[pid]
            count = max(-(-len(vis) // k), -(-len(ir) // k))
            groups[pid] = deque(zip(self._groups(rng, vis, count), self._groups(rng, ir, count)))
            turns.extend([pid] * count)
        pending = deque(turns[i] for i in rng.permutation(len(turns)))

        def finish(pids):
            # All the visible groups in identity order, then the infrared ones in the same order.
            chosen = [groups[pid].popleft() for pid in pids]
            return [int(i) for part in (0, 1) for g in chosen for i in g[part]]

        # A turn is one identity: it always fits, and a mini-batch is complete at P of them.
        return self._pack(pending, int, lambda current, pid: current.append(pid), p, finish)

    def epoch_iterations(self):
        """The epoch of AGW's two-modality ``IdentitySampler`` (mangye16/Cross-Modal-Re-ID-baseline,
        ``utils.py``; CAJ and DEEN copy it): ``int(N / (P K)) + 1`` batches of ``P K`` visible and
        ``P K`` infrared images, ``N = max(n_visible, n_infrared)`` over every training image and
        ``P K = batch_size / 2``. The larger modality's images are drawn about once per epoch."""
        return max(self.num_visible, self.num_infrared) // (self.batch_size // 2) + 1

    def shortage(self):
        k, p = self.num_instances, self.num_ids_per_batch
        return (
            f"one batch of SOLVER.IMS_PER_BATCH={self.batch_size} (DATALOADER.NUM_INSTANCE={k} "
            f"visible + {k} infrared per identity, so {p} identities per process and batch, "
            f"{p * self.world_size} in all) cannot be formed: the training set has "
            f"{len(self.index_by_pid)} identities with items of both modalities"
            f" ({len(self.single_modality)} more with one modality only). Lower "
            "SOLVER.IMS_PER_BATCH, or use more identities."
        )


def build_sampler(cfg, pids, modalities=None):
    """The training sampler ``DATALOADER.SAMPLER_TRAIN`` names, over items with these ``pids``
    (and, for ``ModalityIdentitySampler``, these ``modalities``); checked to form a batch."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name not in SAMPLER_NAMES:
        raise SamplerConfigError(
            f"DATALOADER.SAMPLER_TRAIN={name!r} is not supported; use RandomSampler (IRRA's "
            "random batches), IdentitySampler (PK batches) or ModalityIdentitySampler (K visible "
            "+ K infrared per identity, VI-ReID)."
        )
    seed = cfg.SEED if cfg.SEED >= 0 else None
    batch = cfg.SOLVER.IMS_PER_BATCH
    kind = SAMPLER_NAMES[name]
    if kind == "random":
        sampler = RandomBatchSampler(len(pids), batch, seed)
    elif kind == "identity":
        sampler = IdentityBatchSampler(pids, batch, cfg.DATALOADER.NUM_INSTANCE, seed)
    else:
        if modalities is None:
            raise SamplerConfigError(
                f"DATALOADER.SAMPLER_TRAIN={name} needs items with a modality (VI-ReID datasets); "
                "this training set has none."
            )
        sampler = ModalityIdentityBatchSampler(
            pids, modalities, batch, cfg.DATALOADER.NUM_INSTANCE, seed,
            draw=cfg.DATALOADER.MODALITY_DRAW,
        )  # fmt: skip
    sampler.check_batches()
    logger.info(
        f"Training sampler {type(sampler).__name__}: {sampler.batches_in_epoch(0)} batches of "
        f"{batch} in the first epoch (seed {sampler.seed})"
    )
    return sampler
