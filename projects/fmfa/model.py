"""FMFA meta-architecture (Yin et al., Cross-modal Full-mode Fine-grained Alignment, Sec. 3)."""

import torch
import torch.nn.functional as F
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from plugins.modeling.distributed import gather_batch
from plugins.modeling.irra import IRRA
from plugins.modeling.retrieval import put_scalars

from .losses import (
    EFA_QUERY_SUMS,
    LABELLED_COLUMNS,
    WEIGHT_SOURCES,
    a_sdm_loss,
    efa_losses,
    weighted_sdm_loss,
)


@META_ARCH_REGISTRY.register()
class FMFA(IRRA):
    """IRRA + A-SDM + EFA: ``L = L_id + L_irr + L_efa + L_A-sdm`` (Eq. 13).

    Training losses:

    - ``loss_asdm`` (``MODEL.FMFA.A_SDM``): A-SDM between the image and caption globals
      (Eq. 1-4); with A_SDM False IRRA's SDM, logged as ``loss_sdm``;
    - ``loss_id`` and ``loss_irr``: IRRA's (``MODEL.RETRIEVAL.ID_WEIGHT``, ``MODEL.IRR``);
    - ``loss_efa`` (``MODEL.FMFA.EFA``): explicit fine-grained alignment (Eq. 5-12) between the
      caption's tokens (all L positions by default, Eq. 10), the image's patch tokens (class
      token excluded) and the joint embeddings each caption groups from its own image.

    The caption of A-SDM, the classifier and EFA is IRRA's ``MODEL.IRR.GLOBAL_CAPTION``:
    ``unmasked`` in the paper's configs, ``masked`` (the IRR branch's caption) in the
    authors'-code configs.

    A-SDM and EFA have no parameters, so FMFA has exactly IRRA's; inference is IRRA's (the two
    globals), and with ``MODEL.TRAINING_HEADS`` False neither the classifier nor the IRR layers
    are built.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        fcfg = cfg.MODEL.FMFA
        if fcfg.ALPHA_FROM not in WEIGHT_SOURCES:
            raise ValueError(
                f"MODEL.FMFA.ALPHA_FROM={fcfg.ALPHA_FROM!r}; expected one of {WEIGHT_SOURCES}"
            )
        for key, allowed in (
            ("LABELLED_COLUMN", LABELLED_COLUMNS),
            ("EFA_QUERY_SUM", EFA_QUERY_SUMS),
        ):
            if fcfg[key] not in allowed:
                raise ValueError(f"MODEL.FMFA.{key}={fcfg[key]!r}; expected one of {allowed}")
        if fcfg.LSE_LAMBDA <= 0 or fcfg.TAU2 <= 0:
            raise ValueError("MODEL.FMFA.LSE_LAMBDA and MODEL.FMFA.TAU2 must be positive.")
        self.a_sdm = fcfg.A_SDM
        self.alpha = fcfg.ALPHA
        self.alpha_from = fcfg.ALPHA_FROM
        self.weight_grad = fcfg.WEIGHT_GRAD
        self.efa_weight = fcfg.EFA_WEIGHT if fcfg.EFA else 0.0
        self.special_tokens = fcfg.SPECIAL_TOKENS
        self.padding_tokens = fcfg.PADDING_TOKENS
        self.efa_options = {
            "margin_t2e": fcfg.MARGIN_T2E,
            "margin_i2e": fcfg.MARGIN_I2E,
            "tau": fcfg.TAU2,
            "lam": fcfg.LSE_LAMBDA,
            "sigma_scale": fcfg.SIGMA_SCALE,
            "lse_rescale": fcfg.LSE_RESCALE,
            "normalize_hard_sim": fcfg.NORMALIZE_HARD_SIM,
            "keep_positive": fcfg.KEEP_POSITIVE_TERM,
            "query_sum": fcfg.EFA_QUERY_SUM,
        }
        self.labelled_column = fcfg.LABELLED_COLUMN

    def sdm(self, image_feats, text_feats, pids):
        """The global term: A-SDM (Eq. 1-4) or, with ``MODEL.FMFA.A_SDM`` False, IRRA's SDM."""
        if not self.a_sdm:
            return super().sdm(image_feats, text_feats, pids)
        paper = self.alpha_from == "probability" and self.labelled_column == "pair"
        if paper and not self.weight_grad:
            return a_sdm_loss(image_feats, text_feats, pids, self.logit_scale, self.alpha)
        return weighted_sdm_loss(
            image_feats,
            text_feats,
            pids,
            self.logit_scale,
            self.alpha,
            self.alpha_from,
            self.weight_grad,
            labelled_column=self.labelled_column,
        )

    def losses(self, batch):
        if self.efa_weight > 0 and self.padding_tokens:
            # "All positions" are the text encoder's L (77): a batch trimmed to its longest
            # caption is padded back, so the caption length cannot change which take part.
            batch = pad_captions(batch, self.text_encoder.context_length)
        return super().losses(batch)

    def efa_text_mask(self, padding):
        """Caption positions taking part in EFA.

        Args:
            padding (Tensor): (B, L) bool, True after the [EOS] token.

        Returns:
            Tensor: (B, L) bool: every position (``PADDING_TOKENS`` True, the default) or
            [SOS] .. [EOS] (False); ``SPECIAL_TOKENS`` False drops [SOS] and [EOS].
        """
        valid = torch.ones_like(padding) if self.padding_tokens else ~padding
        if not self.special_tokens:
            positions = torch.arange(padding.shape[1], device=padding.device)
            eos = (~padding).sum(dim=1) - 1
            valid = valid & (positions[None, :] != 0) & (positions[None, :] != eos[:, None])
        return valid

    def losses_from(self, feats, batch):
        out = super().losses_from(feats, batch)
        if self.a_sdm:
            out["loss_asdm"] = out.pop("loss_sdm")
        if self.efa_weight > 0:
            # EFA's hard negatives come from the other captions and images of the batch: the
            # global batch of all processes.
            text_tokens, text_mask, image_tokens = gather_batch(
                feats["text_tokens"],
                self.efa_text_mask(feats["text_padding"]),
                feats["image_tokens"][:, 1:],
            )
            terms = efa_losses(text_tokens, text_mask, image_tokens, **self.efa_options)
            put_scalars(**{f"efa_{k}": v.detach() for k, v in terms.items()})
            out["loss_efa"] = sum(terms.values()) * self.efa_weight
        return out


def pad_captions(batch, length):
    """``batch`` with every caption view zero-padded to ``length`` positions.

    Args:
        batch (dict): training batch; ``text*`` entries of shape (B, L') with L' <= length
            (token ids, padding 0, and masked-token labels, 0 ignored) are padded.
        length (int): the positions each caption gets.

    Returns:
        dict: a new dict; the batch itself is not changed.
    """
    out = dict(batch)
    for key, value in batch.items():
        if key.startswith("text") and torch.is_tensor(value) and value.dim() == 2:
            if value.shape[1] < length:
                out[key] = F.pad(value, (0, length - value.shape[1]))
    return out


__all__ = ["FMFA", "pad_captions"]
