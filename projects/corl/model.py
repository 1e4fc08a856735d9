"""CoRL meta-architecture (Yan et al., Cross-modal Collaborative Representation Learning for
Text-to-Image Person Retrieval, IJCAI'25)."""

import copy
import hashlib
import json
import os

import torch
import torch.nn.functional as F
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn
from torch.utils.data import DataLoader, Dataset

from plugins.data.build import load_images
from plugins.data.captions import tokenize
from plugins.data.transforms import PairTransform
from plugins.engine.stages import FeatureTrainSet, Stage, load_or_build_cache, tensor_fingerprint
from plugins.modeling.distributed import gather_batch
from plugins.modeling.losses import sdm_loss
from plugins.modeling.retrieval import RetrievalModel, batch_t2i_accuracy, put_scalars

from .losses import (
    IBM_BOUNDS,
    align_loss,
    correlation_loss,
    crcl_loss,
    feature_mse,
    ibm_loss,
    ibm_star_loss,
    symmetric_nce,
)
from .ves import Adapter, VirtualTextSynthesizer

MATCHING = ("ibm", "ibm_star", "sdm")
CRCL_TEXT = ("real", "virtual")
VES_ENCODERS = ("shared", "frozen")
VES_STAGE, COLLABORATION_STAGE = "stage1", "stage2"


class _ImageList(Dataset):
    """Test-time (unaugmented) images of training items, for feature extraction."""

    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return load_images(self.items[index], self.transform, load_thermal=False)["images"]


@META_ARCH_REGISTRY.register()
class CoRL(RetrievalModel):
    """Cross-modal collaborative representation learning, trained in two stages.

    Stage 1 (``stage1``, VES, Eq. 1-4): the CLIP encoders are frozen and only the VES FC layer
    trains, on image and caption embeddings extracted once and cached. Stage 2 (``stage2``,
    Eq. 5-10): VES frozen; backbones, Adapter and classifier train with L_IBM + L_id +
    L_align^s2 + L_CRCL on PK batches. Inference: ``encode_image`` is
    ``[norm(v); norm(t_hat)]`` and ``encode_text`` is ``[norm(t); norm(t)]``, so their dot product
    is sim(t, v) + sim(t, t_hat), the paper's unweighted sum.

    The VES FC layer and the Adapter are used at inference; only the classifier is training-only.
    With ``MODEL.CORL.VES_BRANCH`` False there is no branch and no stage 1 (Table 2 rows 0#, 1#).

    ``MODEL.CORL.VES_ENCODERS``: "shared" runs VES on the model's own (fine-tuned) image feature
    and text encoder; "frozen" on copies of both encoders (``ves_encoders.image`` / ``.text``)
    that follow the encoders through stage 1, are taken once when stage 2 starts (the
    ``ves_encoders_taken`` flag, saved with the weights, keeps a resumed stage 2 from taking
    them again) and never train; inference then runs the image through both image encoders.
    """

    training_only_prefixes = ("classifier.",)

    def __init__(self, cfg):
        super().__init__(cfg)
        c = cfg.MODEL.CORL
        if c.MATCHING not in MATCHING:
            raise ValueError(f"MODEL.CORL.MATCHING={c.MATCHING!r}; expected one of {MATCHING}")
        if c.CMC and not c.VES_BRANCH:
            raise ValueError(
                "MODEL.CORL.CMC needs the virtual-text branch (MODEL.CORL.VES_BRANCH True)"
            )
        if cfg.MODEL.RETRIEVAL.FUSION != "rgb":
            raise ValueError("CoRL is text-to-image: MODEL.RETRIEVAL.FUSION must be 'rgb'")
        if c.CRCL_TEXT not in CRCL_TEXT:
            raise ValueError(f"MODEL.CORL.CRCL_TEXT={c.CRCL_TEXT!r}; expected one of {CRCL_TEXT}")
        if c.VES_ENCODERS not in VES_ENCODERS:
            raise ValueError(
                f"MODEL.CORL.VES_ENCODERS={c.VES_ENCODERS!r}; expected one of {VES_ENCODERS}"
            )
        self.matching = c.MATCHING
        # Eq. 9's bounds, each under its own key: MODEL.CORL.ALPHA, BETA, TAU_SP, TAU_WP, TAU_N.
        self.bounds = {name: c[name.upper()] for name in IBM_BOUNDS}
        self.ibm_weight = c.IBM_WEIGHT
        self.use_ves = c.VES_BRANCH
        self.use_cmc = c.CMC
        v = c.VES
        self.tau_a = v.TAU_A
        self.s1_weights = {"nce": v.NCE_WEIGHT, "mse": v.MSE_WEIGHT, "cor": v.COR_WEIGHT}
        self.lambda1, self.align_tau, self.align_weight = c.LAMBDA1, c.ALIGN_TAU, c.ALIGN_WEIGHT
        self.crcl_tau, self.crcl_weight = c.CRCL_TAU, c.CRCL_WEIGHT
        self.crcl_real_text = c.CRCL_TEXT == "real"
        self.stage = COLLABORATION_STAGE
        self.frozen_ves = self.use_ves and c.VES_ENCODERS == "frozen"
        if self.use_ves:
            self.ves = VirtualTextSynthesizer(
                self.embed_dim, self.text_encoder.width, v.NUM_TOKENS, v.PROMPT
            )
            self.adapter = Adapter(self.text_encoder.embed_dim, c.ADAPTER_DIM)
        if self.frozen_ves:
            self.ves_encoders = nn.ModuleDict(
                {
                    "image": copy.deepcopy(self.image_encoder),
                    "text": copy.deepcopy(self.text_encoder),
                }
            )
            self.ves_encoders.requires_grad_(False)
            self.ves_encoders.eval()
            self.register_buffer("ves_encoders_taken", torch.tensor(False))

    # ------------------------------------------------------------------ stages
    @classmethod
    def stages(cls, cfg):
        """Stage 1 (VES on cached features) and stage 2 (collaboration); none without VES."""
        c = cfg.MODEL.CORL
        if not c.VES_BRANCH:
            return []
        v = c.VES
        ves = Stage(
            VES_STAGE,
            opts=(
                "SOLVER.MAX_EPOCH",
                v.EPOCHS,
                "SOLVER.BASE_LR",
                v.BASE_LR,
                "TEST.EVAL_PERIOD",
                v.EPOCHS,  # evaluate once, at the end
            ),  # fmt: skip
            trainable=("ves.",),
            warmup_epochs=v.WARMUP_EPOCHS,
            train_data="features",
        )
        frozen_encoders = ("ves_encoders.",) if c.VES_ENCODERS == "frozen" else ()
        collaboration = Stage(
            COLLABORATION_STAGE,
            frozen=("ves.", *frozen_encoders),
            lr_factors={"adapter.": c.ADAPTER_LR_FACTOR},
            warmup_epochs=c.WARMUP_EPOCHS,
        )
        return [ves, collaboration]

    def enter_stage(self, stage):
        if stage.name not in (VES_STAGE, COLLABORATION_STAGE):
            raise ValueError(f"CoRL has no stage {stage.name!r}")
        self.stage = stage.name
        if not self.frozen_ves:
            return
        # Stage 1 trains neither encoder, so VES reads what the copies hold; stage 2 takes them
        # once, from the encoders stage 1 ended with (a resumed stage 2 keeps its saved copies).
        if stage.name == VES_STAGE or not bool(self.ves_encoders_taken):
            self.take_ves_encoders(final=stage.name == COLLABORATION_STAGE)

    @torch.no_grad()
    def take_ves_encoders(self, final=True):
        """Copy the image and text encoders' weights into VES's frozen encoders; ``final``
        marks the copies as taken for good (the start of stage 2)."""
        self.ves_encoders["image"].load_state_dict(self.image_encoder.state_dict())
        self.ves_encoders["text"].load_state_dict(self.text_encoder.state_dict())
        self.ves_encoders_taken.fill_(final)

    def train(self, mode=True):
        super().train(mode)
        if self.frozen_ves:
            self.ves_encoders.eval()  # never trained: no dropout, as at inference
        return self

    def stage_train_set(self, stage, cfg, image_set):
        """Stage 1's training set: z_v of every training image and z_t of every caption,
        extracted once by the frozen encoders and cached (rebuilt when the encoders' weights,
        the training items or the input settings change)."""
        items = image_set.img_items
        listing = json.dumps([(i.img_path, i.pid, i.image_id, i.caption) for i in items])
        encoders = {f"image.{k}": t for k, t in self.image_encoder.state_dict().items()}
        encoders.update({f"text.{k}": t for k, t in self.text_encoder.state_dict().items()})
        fingerprint = {
            "encoder weights": tensor_fingerprint(encoders),
            "training items": hashlib.sha256(listing.encode()).hexdigest(),
            "input": json.dumps(
                [
                    list(cfg.INPUT.SIZE_TEST),
                    list(cfg.MODEL.PIXEL_MEAN),
                    list(cfg.MODEL.PIXEL_STD),
                    cfg.INPUT.TEXT.CONTEXT_LENGTH,
                ]
            ),
        }
        path = cfg.MODEL.CORL.VES.CACHE_FILE or os.path.join(cfg.OUTPUT_DIR, "features.pth")
        tensors = load_or_build_cache(
            path, fingerprint, lambda: self.extract_embeddings(cfg, items), "stage-1 embeddings"
        )
        return FeatureTrainSet(
            {"image_embeds": tensors["image_embeds"], "text_embeds": tensors["text_embeds"]},
            pids=[i.pid for i in items],
            image_ids=[i.image_id for i in items],
            index={"image_embeds": tensors["image_rows"]},
            num_classes=image_set.num_classes,
        )

    @torch.no_grad()
    def extract_embeddings(self, cfg, items):
        """z_v of each distinct training image (test transform, no augmentation) and z_t of
        each caption; ``image_rows[i]`` is item i's row of ``image_embeds``."""
        was_training = self.training
        self.eval()
        rows, images = {}, []
        for item in items:
            if item.image_id not in rows:
                rows[item.image_id] = len(images)
                images.append(item)
        loader = DataLoader(
            _ImageList(images, PairTransform.from_config(cfg, is_train=False)),
            batch_size=cfg.TEST.IMS_PER_BATCH,
            num_workers=cfg.DATALOADER.TEST_NUM_WORKERS,
        )
        image_embeds = torch.cat(
            [self.image_tokens({"images": batch})[2][:, 0].cpu() for batch in loader]
        )
        length, step = cfg.INPUT.TEXT.CONTEXT_LENGTH, cfg.TEST.IMS_PER_BATCH
        text_embeds = []
        for start in range(0, len(items), step):
            ids = torch.stack([tokenize(i.caption, length) for i in items[start : start + step]])
            text_embeds.append(self.text_tokens(ids)[1].cpu())
        self.train(was_training)
        return {
            "image_embeds": image_embeds,
            "text_embeds": torch.cat(text_embeds),
            "image_rows": torch.tensor([rows[i.image_id] for i in items], dtype=torch.long),
        }

    # ------------------------------------------------------------------ features
    def new_layers(self):
        """IRRA's optimizer roles: the classifier is a head (5x lr); the VES FC and the Adapter
        take their lr from the stage (stage 1's BASE_LR, ``MODEL.CORL.ADAPTER_LR_FACTOR``)."""
        return {"cross": (), "head": ("classifier.",)}

    def ves_text_encoder(self):
        """The text encoder VES decodes through (``MODEL.CORL.VES_ENCODERS``)."""
        return self.ves_encoders["text"] if self.frozen_ves else self.text_encoder

    def ves_image_embeds(self, batch, image_feats):
        """z_v VES reads (B, D), without gradient: the model's image features ``image_feats``
        (B, D) ("shared"), or the frozen image encoder's of ``batch["images"]`` ("frozen")."""
        with torch.no_grad():
            if not self.frozen_ves:
                return image_feats.detach()
            return self.ves_encoders["image"].forward_tokens(self.normalize(batch["images"]))[:, 0]

    def virtual_text(self, image_embeds):
        """Virtual-text feature t_hat = g(VES(z_v)) (B, D) from the embeddings z_v (B, D) VES
        reads (``ves_image_embeds``)."""
        return self.adapter(self.ves(image_embeds, self.ves_text_encoder()))

    @torch.no_grad()
    def encode_image(self, batch):
        """Gallery feature: ``[norm(v); norm(t_hat)]`` (B, 2D), or v (B, D) without VES."""
        v = self.image_tokens(batch)[2][:, 0]
        if not self.use_ves:
            return v
        t_hat = self.virtual_text(self.ves_image_embeds(batch, v))
        return torch.cat([F.normalize(v, dim=1), F.normalize(t_hat, dim=1)], 1)

    @torch.no_grad()
    def encode_text(self, ids):
        """Query feature: ``[norm(t); norm(t)]`` (B, 2D), or t (B, D) without VES."""
        t = self.text_tokens(ids)[1]
        if not self.use_ves:
            return t
        t = F.normalize(t, dim=1)
        return torch.cat([t, t], dim=1)

    # ------------------------------------------------------------------ losses
    def losses(self, batch):
        if self.stage == VES_STAGE:
            return self.ves_losses(batch)
        return self.collaboration_losses(batch)

    def ves_losses(self, batch):
        """Stage 1, L_VES^s1 = L_nce^s1 + L_mse^s1 + L_cor^s1 (Eq. 1-4) on cached embeddings."""
        z_v = batch["image_embeds"].to(self.device)
        z_t = batch["text_embeds"].to(self.device)
        pids = batch["targets"].to(self.device)
        z_v, z_t, pids = gather_batch(z_v, z_t, pids)
        z_hat = self.ves(z_v, self.ves_text_encoder())
        w = self.s1_weights
        out = {}
        if w["nce"] > 0:
            out["loss_nce_s1"] = w["nce"] * symmetric_nce(z_t, z_hat, self.tau_a)
        if w["mse"] > 0:
            out["loss_mse_s1"] = w["mse"] * feature_mse(z_hat, z_t)
        if w["cor"] > 0:
            out["loss_cor_s1"] = w["cor"] * correlation_loss(z_v, z_hat, pids, self.tau_a)
        with torch.no_grad():
            sim = F.normalize(z_hat, dim=1) @ F.normalize(z_t, dim=1).t()
            put_scalars(
                ves_pair_acc=(sim.argmax(1) == torch.arange(len(sim), device=sim.device))
                .float()
                .mean()
            )
        return out

    def collaboration_losses(self, batch):
        """Stage 2, L^s2 = L_IBM + L_id + L_align^s2 + L_CRCL (Eq. 10)."""
        pids = batch["targets"].to(self.device)
        image_ids = batch.get("image_ids")
        image_ids = image_ids.to(self.device) if image_ids is not None else None
        v = self.image_tokens(batch)[2][:, 0]
        text_ids = batch["text_mlm"] if self.masked_text else batch["text"]
        t = self.text_tokens(text_ids)[1]
        # The frozen encoders' z_v comes from this process's images: gathered with the rest.
        z_v = self.ves_image_embeds(batch, v) if self.frozen_ves else None
        v, t, pids, image_ids, z_v = gather_batch(v, t, pids, image_ids, z_v)
        out = {}
        if self.matching == "ibm":
            out["loss_ibm"] = self.ibm_weight * ibm_loss(v, t, pids, image_ids, **self.bounds)
        elif self.matching == "ibm_star":
            out["loss_ibm"] = self.ibm_weight * ibm_star_loss(v, t, pids, image_ids, **self.bounds)
        else:
            out["loss_sdm"] = self.sdm_weight * sdm_loss(v, t, pids, self.logit_scale)
        if self.id_weight > 0:
            out["loss_id"] = self.identity_losses(v, t, pids)
        if self.use_ves:
            # VES is frozen and L_align^s2 updates only the Adapter (Sec. 3.2): no gradient
            # flows back through the synthesizer into the encoders.
            if z_v is None:
                z_v = self.ves_image_embeds(batch, v)
            with torch.no_grad():
                z_hat = self.ves(z_v, self.ves_text_encoder())
            t_hat = self.adapter(z_hat)
            out["loss_align"] = self.align_weight * align_loss(
                t_hat, t, self.lambda1, self.align_tau
            )
            if self.use_cmc:
                text = t if self.crcl_real_text else None  # p_t of Eq. 7 (MODEL.CORL.CRCL_TEXT)
                out["loss_crcl"] = self.crcl_weight * crcl_loss(
                    v, t_hat, pids, self.crcl_tau, text_feats=text
                )
        put_scalars(batch_t2i_acc=batch_t2i_accuracy(v, t, pids))
        return out
