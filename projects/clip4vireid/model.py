"""CLIP4VI-ReID meta-architecture: a three-stream CLIP ResNet-50 (RGB, IR, shared) trained in
three stages: text semantic generation (TSG), infrared feature embedding (IFE) and high-level
semantic alignment (HSA)."""

import hashlib
import json
import logging
import os
from types import SimpleNamespace

import torch
from fastreid.data.transforms import build_transforms
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn
from torch.utils.data import DataLoader

from plugins.data.vi_build import VITestImages
from plugins.engine.stages import FeatureTrainSet, Stage, load_or_build_cache, tensor_fingerprint
from plugins.modeling.distributed import gather_batch
from plugins.modeling.losses import id_loss, wrt_loss
from plugins.modeling.prompts import encode_prompt, prompt_token_ids
from plugins.modeling.retrieval import put_scalars
from plugins.modeling.two_stream import INFRARED, VISIBLE, VICLIPModel, modality_masks

from .config import SHARED_BN_MODES, STAGE_NAMES, TSG_TRAIN_DATA
from .losses import identity_contrastive_loss, text_bank_ce_loss

logger = logging.getLogger(__name__)

TSG, IFE, HSA = STAGE_NAMES
FEATURES = "image_feats"  # TSG's cached features in a FeatureTrainSet


@META_ARCH_REGISTRY.register()
class CLIP4VIReID(VICLIPModel):
    """CLIP4VI-ReID on the two-stream CLIP ResNet (``plugins.modeling.two_stream``).

    E_v = ``visual.visible``, E_r = ``visual.infrared``, E_s = ``visual.shared``; E_t =
    ``text``; the learned tokens [X_1^i]..[X_M^i] of identity i are ``prompts[i]``. Stages
    (``MODEL.CLIP4VI.STAGES``), one command, each in ``OUTPUT_DIR/<name>``:

    - ``tsg`` (Eq. 1-5): only ``prompts`` train; RGB image features (cached, un-augmented, by
      default) in random visible-only batches over the whole training set against their
      identities' prompt features, both directions, positives = same identity.
    - ``ife`` (Eq. 6-8): only E_s trains; IR images in random infrared-only batches against the
      text features TSG produced, computed once at the stage's start and stored (E_t and the
      prompts are frozen then).
    - ``hsa`` (Eq. 9-14): E_v, E_r, E_t, the prompts and the classifier train, E_s is fixed
      (its batch norms follow HSA's batches, ``MODEL.CLIP4VI.HSA.SHARED_BN``), on two-modality
      PK batches; ``lambda_1 L_v2tce + lambda_2 L_r2tce + L_id + L_wrt``, the CE over every
      identity's text feature, recomputed each step (E_t trains).

    Other frozen batch norms stay in eval mode (their statistics do not move). CLIP's
    temperature is kept in every checkpoint. Inference uses the visual encoders only
    (``encode_image``); the prompts, E_t, the classifier and the temperature are training-only.
    """

    training_only_prefixes = ("classifier.", "prompts", "text.", "clip_logit_scale")
    records_clip_logit_scale = True
    logit_scale_key = "MODEL.CLIP4VI.LOGIT_SCALE"

    def __init__(self, cfg):
        super().__init__(cfg)
        c = cfg.MODEL.CLIP4VI
        self.stages(cfg)  # a bad MODEL.CLIP4VI.STAGES fails at build time too
        self.lambda1, self.lambda2 = c.LAMBDA1, c.LAMBDA2
        self.fixed_logit_scale = c.LOGIT_SCALE
        self.shared_bn = c.HSA.SHARED_BN
        self.stage = HSA  # until a stage is entered
        self._text_bank = None
        if self.training_heads:
            ids, slot = prompt_token_ids(c.PROMPT, c.NUM_TOKENS, key="MODEL.CLIP4VI.PROMPT")
            self.register_buffer("prompt_ids", ids, persistent=False)
            self.prompt_slot = slot
            # CLIP-ReID's initialisation of class-specific context tokens.
            width = self.text.width
            self.prompts = nn.Parameter(torch.randn(self.num_classes, c.NUM_TOKENS, width) * 0.02)

    @classmethod
    def stages(cls, cfg):
        """The stages ``MODEL.CLIP4VI.STAGES`` names, with the paper's schedules."""
        c = cfg.MODEL.CLIP4VI
        names = list(c.STAGES)
        unknown = [n for n in names if n not in STAGE_NAMES]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(
                f"MODEL.CLIP4VI.STAGES={names}: name each of {list(STAGE_NAMES)} at most once, "
                "in order"
            )
        if names != sorted(names, key=STAGE_NAMES.index):
            raise ValueError(f"MODEL.CLIP4VI.STAGES={names}: keep the order {list(STAGE_NAMES)}")
        if c.HSA.SHARED_BN not in SHARED_BN_MODES:
            raise ValueError(
                f"MODEL.CLIP4VI.HSA.SHARED_BN {c.HSA.SHARED_BN!r} not in {SHARED_BN_MODES}"
            )
        if c.TSG.TRAIN_DATA not in TSG_TRAIN_DATA:
            raise ValueError(
                f"MODEL.CLIP4VI.TSG.TRAIN_DATA {c.TSG.TRAIN_DATA!r} not in {TSG_TRAIN_DATA}"
            )
        trainable = {
            TSG: ("prompts",),
            IFE: ("visual.shared.",),
            HSA: (
                "visual.visible.",
                "visual.infrared.",
                "text.",
                "prompts",
                "bottleneck.",
                "classifier.",
            ),
        }
        stages = []
        for name in names:
            s = c[name.upper()]
            opts = [
                "SOLVER.MAX_EPOCH", s.EPOCHS,
                "SOLVER.BASE_LR", s.BASE_LR,
                "SOLVER.WARMUP_FACTOR", s.WARMUP_START_LR / s.BASE_LR,
                "SOLVER.WEIGHT_DECAY", s.WEIGHT_DECAY,
                "SOLVER.WEIGHT_DECAY_NORM", s.WEIGHT_DECAY,
                "SOLVER.WEIGHT_DECAY_BIAS", s.WEIGHT_DECAY,
            ]  # fmt: skip
            if s.IMS_PER_BATCH:
                opts += ["SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH]
            lr_factors, train_data = {}, "images"
            if name == HSA:
                opts += ["SOLVER.SCHED", "MultiStepLR", "SOLVER.STEPS", list(s.STEPS)]
                opts += ["SOLVER.GAMMA", 0.1]
                if s.TEXT_LR_FACTOR != 1.0:
                    lr_factors = {"text.": s.TEXT_LR_FACTOR}
            else:
                # One modality's images in random batches over the whole training set (CLIP-ReID's
                # stage 1), not the visible or infrared half of a P x (K + K) batch of P identities.
                opts += ["DATASETS.VI_TRAIN_MODALITY", "visible" if name == TSG else "infrared"]
                opts += ["DATALOADER.SAMPLER_TRAIN", "RandomSampler"]
                opts += ["SOLVER.SCHED", "CosineAnnealingLR", "SOLVER.ETA_MIN_LR", s.ETA_MIN_LR]
                # Evaluated once, at the end: TSG leaves the image features as CLIP's.
                opts += ["TEST.EVAL_PERIOD", s.EPOCHS]
                if name == TSG:
                    train_data = s.TRAIN_DATA
            stages.append(
                Stage(
                    name,
                    opts=tuple(opts),
                    trainable=trainable[name],
                    frozen=("bottleneck.bias",),  # BNNeck: no shift, in every stage
                    lr_factors=lr_factors,
                    warmup_epochs=s.WARMUP_EPOCHS,
                    train_data=train_data,
                )
            )
        return stages

    def enter_stage(self, stage):
        if stage.name not in STAGE_NAMES:
            raise ValueError(f"CLIP4VI-ReID has no stage {stage.name!r}")
        self.stage = stage.name
        self._text_bank = None
        # E_s's parameters are fixed in HSA; its batch norms may still follow HSA's batches.
        self.train_mode_norms = ("visual.shared.",) if self._shared_bn_trains() else ()
        self.train(self.training)
        source = "MODEL.CLIP4VI.LOGIT_SCALE" if self.fixed_logit_scale else "CLIP's temperature"
        logger.info(
            f"Stage '{stage.name}': similarity scale {float(self.logit_scale):.2f} ({source})"
        )

    def _shared_bn_trains(self):
        return self.stage == HSA and self.shared_bn == "train"

    @property
    def logit_scale(self):
        return self.fixed_logit_scale or self.clip_logit_scale

    def stage_train_set(self, stage, cfg, image_set):
        """TSG's training set: E_s(E_v(x)) of every visible training image (``image_set``, the
        visible-only set ``DATASETS.VI_TRAIN_MODALITY`` gives), extracted once with the test
        transform and cached in the stage's folder (rebuilt when E_v, E_s, the images or the
        input settings change)."""
        items = list(image_set.img_items)
        if any(item.modality != "visible" for item in items):
            raise ValueError(
                f"stage {stage.name} caches visible features: train it with "
                "DATASETS.VI_TRAIN_MODALITY visible"
            )
        weights = {
            k: t
            for k, t in self.visual.state_dict().items()
            if k.startswith(("visible.", "shared."))
        }
        listing = json.dumps([(item.path, item.pid) for item in items])
        fingerprint = {
            "encoder weights": tensor_fingerprint(weights),
            "training items": hashlib.sha256(listing.encode()).hexdigest(),
            "input": json.dumps(
                [list(cfg.INPUT.SIZE_TEST), list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)]
            ),
        }
        tensors = load_or_build_cache(
            os.path.join(cfg.OUTPUT_DIR, "features.pth"),
            fingerprint,
            lambda: {FEATURES: self.extract_features(cfg, items)},
            "visible image features",
        )
        return FeatureTrainSet(
            {FEATURES: tensors[FEATURES]},
            pids=[item.pid for item in items],
            image_ids=range(len(items)),
            num_classes=image_set.num_classes,
        )

    @torch.no_grad()
    def extract_features(self, cfg, items):
        """Pooled features (N, D) of ``items`` (VIImage) by their modality's stream and E_s,
        in eval mode, with the test transform (no augmentation)."""
        was_training = self.training
        self.eval()
        loader = DataLoader(
            VITestImages(SimpleNamespace(images=items), build_transforms(cfg, is_train=False)),
            batch_size=cfg.TEST.IMS_PER_BATCH,
            num_workers=cfg.DATALOADER.TEST_NUM_WORKERS,
        )
        feats = torch.cat([self.image_features(batch).float().cpu() for batch in loader])
        self.train(was_training)
        return feats

    def identity_text(self, pids):
        """Text features f_i^t = E_t(T_i) (Eq. 1) of identities ``pids`` (B,) -> (B, D)."""
        unique, inverse = torch.unique(pids, return_inverse=True)
        feats = encode_prompt(self.text, self.prompt_ids, self.prompt_slot, self.prompts[unique])
        return feats[inverse]

    def stored_text_bank(self):
        """Every identity's text feature, computed once per stage without gradient (IFE)."""
        if self._text_bank is None or self._text_bank.device != self.device:
            with torch.no_grad():
                pids = torch.arange(self.num_classes, device=self.device)
                self._text_bank = torch.cat(
                    [self.identity_text(chunk) for chunk in pids.split(256)]
                )
        return self._text_bank

    def _images(self, batch, modality):
        """Normalised images of one modality, their identities and modality codes."""
        pids = batch["targets"].to(self.device)
        masks = modality_masks(batch["modalities"], pids.shape[0], self.device)
        keep = masks[modality]
        if not bool(keep.any()):
            name = ("visible", "infrared")[modality]
            raise ValueError(f"stage {self.stage} needs {name} images; the batch has none")
        images = self.normalize(batch["images"])[keep]
        return images, pids[keep], torch.full_like(pids[keep], modality)

    def losses(self, batch):
        if "modalities" not in batch and FEATURES not in batch:
            raise KeyError("CLIP4VI-ReID trains on VI-ReID batches with 'modalities'")
        return getattr(self, f"{self.stage}_losses")(batch)

    def tsg_losses(self, batch):
        if FEATURES in batch:  # cached features of visible images
            image_feats = batch[FEATURES].to(self.device)
            pids = batch["targets"].to(self.device)
        else:
            images, pids, codes = self._images(batch, VISIBLE)
            with torch.no_grad():  # E_v and E_s are frozen
                image_feats = self.visual(images, codes)
        text_feats = self.identity_text(pids)
        image_feats, text_feats, pids = gather_batch(image_feats, text_feats, pids)
        scale = self.logit_scale
        return {
            "loss_v2t": identity_contrastive_loss(image_feats, text_feats, pids, pids, scale),
            "loss_t2v": identity_contrastive_loss(text_feats, image_feats, pids, pids, scale),
        }

    def ife_losses(self, batch):
        images, pids, codes = self._images(batch, INFRARED)
        with torch.no_grad():  # E_r is frozen
            maps = self.visual.specific(images, codes)
        image_feats = self.visual.shared_forward(maps)
        text_feats = self.stored_text_bank()[pids]
        image_feats, text_feats, pids = gather_batch(image_feats, text_feats, pids)
        scale = self.logit_scale
        return {
            "loss_r2t": identity_contrastive_loss(image_feats, text_feats, pids, pids, scale),
            "loss_t2r": identity_contrastive_loss(text_feats, image_feats, pids, pids, scale),
        }

    def hsa_losses(self, batch):
        pids = batch["targets"].to(self.device)
        modalities = torch.as_tensor(batch["modalities"], device=self.device)
        feats, pids, modalities = gather_batch(self.image_features(batch), pids, modalities)
        vis, ir = modality_masks(modalities, pids.shape[0], self.device)
        bank = self.identity_text(torch.arange(self.num_classes, device=self.device))
        scale = self.logit_scale
        logits = self.identity_logits(feats)
        out = {"loss_id": id_loss(logits, pids), "loss_wrt": wrt_loss(feats, pids)}
        if bool(vis.any()):
            out["loss_v2tce"] = self.lambda1 * text_bank_ce_loss(feats[vis], bank, pids[vis], scale)
        if bool(ir.any()):
            out["loss_r2tce"] = self.lambda2 * text_bank_ce_loss(feats[ir], bank, pids[ir], scale)
        put_scalars(id_acc=(logits.argmax(1) == pids).float().mean())
        return out
