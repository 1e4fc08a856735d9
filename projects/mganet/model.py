"""MGANet meta-architecture (Deng et al., Text-RGBT Person Retrieval, Sec. 3)."""

import torch
import torch.nn.functional as F
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn

from plugins.modeling.cross_modal import (
    CrossModalTransformer,
    MLMHead,
    masked_token_prediction,
)
from plugins.modeling.distributed import gather_batch
from plugins.modeling.fusion import TokenFusion
from plugins.modeling.losses import sdm_loss
from plugins.modeling.retrieval import RetrievalModel, batch_t2i_accuracy, put_scalars

from .atf import AdaptiveTokenFusion
from .losses import mab_loss, masked_mean, semantic_consistency_loss

MGANET_FUSIONS = ("atf", "add", "cat")

# Batch key -> the INPUT.TEXT.VIEWS entry that produces it.
_VIEW_OF_KEY = {
    "text_mlm": "mlm",
    "text_color_masked": "color_masked",
    "text_nocolor": "nocolor",
    "text_nocolor_mlm": "nocolor_mlm",
}


@META_ARCH_REGISTRY.register()
class MGANet(RetrievalModel):
    """Multilevel global-local cross-modal alignment network for text-RGBT retrieval.

    One shared CLIP image encoder gives RGB tokens V and thermal tokens T; the fusion
    (``MODEL.MGANET.FUSION``, ATF by default) gives F. Captions come in three masked views
    encoded by the shared text encoder: L1 (every colour word masked, ``text_color_masked``),
    L2 (random masking, ``text_mlm``), L3 (colour-free caption with random masking of attribute
    words, ``text_nocolor_mlm``). Training losses:

    - ``loss_sdm``: SDM between F^C and L2^C (Eq. 1-3, 1 / tau_1 = MODEL.RETRIEVAL.LOGIT_SCALE);
    - ``loss_mab`` (MGA): InfoNCE V^C <-> L1^C and T^C <-> frozen L3^C (Eq. 4-6);
    - ``loss_frt`` (MLA): L2 tokens attend to F, MLM head, cross-entropy at masked words (Eq. 8-9);
    - ``loss_vrt`` / ``loss_trt`` (MLA): L1 attends to V, L3 to T; 1 - cosine to the detached
      token embeddings of the unmasked caption (``text`` / ``text_nocolor``) (Eq. 10-13);
    - ``loss_id`` only if MODEL.RETRIEVAL.ID_WEIGHT > 0 (not part of the paper).

    With MGA and MLA off and FUSION "add" this is the paper's baseline and computes exactly the
    loss of ``CLIPRetrieval`` with MASKED_TEXT True and FUSION "add". Inference: fused global
    F^C against the unmasked caption's global.

    The reconstruction layers live under ``self.heads`` so that ``SOLVER.HEADS_LR_FACTOR``
    scales their learning rate (IRRA trains its cross-modal layers at 5x the base rate).
    Inference does not use them: with ``MODEL.TRAINING_HEADS`` False they are not built.
    """

    training_only_prefixes = ("classifier.", "heads.")

    def __init__(self, cfg):
        super().__init__(cfg)
        mcfg = cfg.MODEL.MGANET
        if cfg.MODEL.RETRIEVAL.FUSION == "rgb":
            raise ValueError(
                "MGANet trains on RGB + thermal pairs, but MODEL.RETRIEVAL.FUSION is 'rgb', so the "
                "loaders would not read thermal images. Set MODEL.RETRIEVAL.FUSION add (it only "
                "decides what the loaders read here) and choose MGANet's fusion with "
                "MODEL.MGANET.FUSION (atf, add or cat)."
            )
        if mcfg.FUSION not in MGANET_FUSIONS:
            raise ValueError(
                f"MODEL.MGANET.FUSION={mcfg.FUSION!r}; expected one of {MGANET_FUSIONS} (MGANet "
                "needs both modalities; unimodal rows use CLIPRetrieval with FUSION rgb / t)."
            )
        dim = self.embed_dim
        if mcfg.FUSION == "atf":
            self.fusion = AdaptiveTokenFusion(dim, mcfg.ATF_HIDDEN, mcfg.ATF_DROPOUT)
        else:
            self.fusion = TokenFusion(mcfg.FUSION, dim, cfg.MODEL.RETRIEVAL.CAT_INIT)

        self.tau2 = mcfg.TAU2
        self.mab_weight = mcfg.MAB_WEIGHT if mcfg.MGA else 0.0
        self.frt_weight = mcfg.FRT_WEIGHT if mcfg.MLA else 0.0
        self.vrt_weight = mcfg.VRT_WEIGHT if mcfg.MLA else 0.0
        self.trt_weight = mcfg.TRT_WEIGHT if mcfg.MLA else 0.0

        branches = [
            name
            for name, weight in (
                ("frt", self.frt_weight),
                ("vrt", self.vrt_weight),
                ("trt", self.trt_weight),
            )
            if weight > 0
        ]
        if branches and self.training_heads:
            heads = mcfg.CMT_HEADS or max(1, dim // 64)
            shared = None
            modules = {}
            for name in branches:
                if mcfg.SHARE_CMT:
                    if shared is None:
                        shared = CrossModalTransformer(dim, heads, mcfg.CMT_DEPTH)
                    modules[name] = shared
                else:
                    modules[name] = CrossModalTransformer(dim, heads, mcfg.CMT_DEPTH)
            if "frt" in modules:
                modules["mlm"] = MLMHead(
                    dim, self.text_encoder.vocab_size, output_std=modules["frt"].proj_std
                )
            self.heads = nn.ModuleDict(modules)

        self.required_keys = ["text_mlm"]
        if self.mab_weight > 0 or self.vrt_weight > 0:
            self.required_keys.append("text_color_masked")
        if self.mab_weight > 0 or self.trt_weight > 0:
            self.required_keys.append("text_nocolor_mlm")
        if self.vrt_weight > 0:
            self.required_keys.append("text")
        if self.trt_weight > 0:
            self.required_keys.append("text_nocolor")

    def new_layers(self):
        """IRRA's optimizer roles (see ``RetrievalModel.new_layers``): the reconstruction
        transformers' cross-attention and blocks are cross-modal layers, the MLM head a head;
        their pre/post LayerNorms stay at the base rate, as IRRA's ``ln_pre_*`` / ``ln_post``.
        ATF and Cat layers count as cross-modal (a deviation: IRRA has no fusion)."""
        roles = super().new_layers()
        heads = getattr(self, "heads", {})
        cross = tuple(
            f"heads.{name}.{part}."
            for name, module in heads.items()
            if isinstance(module, CrossModalTransformer)
            for part in CrossModalTransformer.NEW_LAYERS
        )
        mlm = ("heads.mlm.",) if "mlm" in heads else ()
        return {"cross": roles["cross"] + cross, "head": roles["head"] + mlm}

    def required_views(self):
        """The ``INPUT.TEXT.VIEWS`` entries this configuration trains on."""
        return [_VIEW_OF_KEY[k] for k in self.required_keys if k in _VIEW_OF_KEY]

    def _check_views(self, batch):
        missing = [k for k in self.required_keys if k not in batch]
        if missing:
            views = self.required_views()
            raise ValueError(
                f"MGANet's training batch lacks {missing}. With the current MODEL.MGANET "
                f"switches it needs the caption views {views}: set INPUT.TEXT.VIEWS "
                f"{tuple(views)!r} (configs/RGBTPEDES/mganet.yml sets all four)."
            )

    def _labels(self, batch, key):
        return batch[f"{key}_labels"].to(self.device, non_blocking=True)

    def losses(self, batch):
        self._check_views(batch)
        pids = batch["targets"].to(self.device)
        rgb, thermal, fused = self.image_tokens(batch)
        l2_tokens, l2_global, l2_padding = self.caption_features(batch["text_mlm"])
        fused_global, l2_global, pids = gather_batch(fused[:, 0], l2_global, pids)

        out = {
            "loss_sdm": sdm_loss(fused_global, l2_global, pids, self.logit_scale) * self.sdm_weight
        }
        if self.id_weight > 0:
            out["loss_id"] = self.identity_losses(fused_global, l2_global, pids)
        scalars = {"batch_t2i_acc": batch_t2i_accuracy(fused_global, l2_global, pids)}

        l1 = l3 = None
        if self.mab_weight > 0 or self.vrt_weight > 0:
            l1 = self.caption_features(batch["text_color_masked"])
        if self.trt_weight > 0:
            l3 = self.caption_features(batch["text_nocolor_mlm"])
        elif self.mab_weight > 0:
            with torch.no_grad():  # only the detached binding target is needed
                l3 = self.caption_features(batch["text_nocolor_mlm"])

        if self.mab_weight > 0:
            loss = mab_loss(*gather_batch(rgb[:, 0], l1[1], thermal[:, 0], l3[1]), self.tau2)
            out["loss_mab"] = loss * self.mab_weight

        if self.frt_weight > 0:
            recon = self.heads["frt"](l2_tokens, fused, l2_padding)
            labels = self._labels(batch, "text_mlm")
            loss, scalars["frt_acc"] = masked_token_prediction(self.heads["mlm"], recon, labels)
            out["loss_frt"] = loss * self.frt_weight

        for name, weight, text, image, target_key in (
            ("vrt", self.vrt_weight, l1, rgb, "text"),
            ("trt", self.trt_weight, l3, thermal, "text_nocolor"),
        ):
            if weight <= 0:
                continue
            masked_key = "text_color_masked" if name == "vrt" else "text_nocolor_mlm"
            with torch.no_grad():
                target = self.caption_features(batch[target_key])[0]
            recon = self.heads[name](text[0], image, text[2])
            labels = self._labels(batch, masked_key)
            out[f"loss_{name}"] = semantic_consistency_loss(recon, target, labels) * weight
            with torch.no_grad():
                scalars[f"{name}_cos"] = masked_mean(
                    F.cosine_similarity(recon, target, dim=-1), labels != 0
                )
        put_scalars(**scalars)
        return out
