"""IRRA (Jiang and Ye, Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image
Person Retrieval, CVPR 2023): CLIP + SDM + ID + implicit relation reasoning. The baseline that
FMFA extends, shared here so that every method built on it reuses one implementation."""

from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn

from .cross_modal import CrossModalTransformer, MLMHead, masked_token_prediction
from .retrieval import CLIPRetrieval, put_scalars

# MODEL.IRR.GLOBAL_CAPTION: which caption the global losses see.
GLOBAL_CAPTIONS = ("masked", "unmasked")


@META_ARCH_REGISTRY.register()
class IRRA(CLIPRetrieval):
    """CLIP + SDM + ID + IRR (implicit relation reasoning by masked language modelling).

    Training losses:

    - ``loss_sdm``: SDM between the image global and the caption global;
    - ``loss_id`` (``MODEL.RETRIEVAL.ID_WEIGHT``): one linear classifier shared by both
      modalities' globals;
    - ``loss_irr`` (``MODEL.IRR.WEIGHT``): the masked caption's tokens cross-attend to every
      image token (class token included), ``MODEL.IRR.DEPTH`` self-attention blocks, LayerNorm,
      MLM head, cross-entropy at the masked positions. The self-attention blocks attend to
      every text position, the padding after the end token included, as IRRA's code does
      (``MODEL.IRR.ATTEND_PADDING``; False masks the padding out).

    ``MODEL.IRR.GLOBAL_CAPTION`` chooses the caption of SDM and the classifier: ``masked``, the
    randomly masked caption of the IRR branch (the same ids, encoded once for both: IRRA's
    public code, whose dataset masks the caption ids in place, so every published IRRA run
    aligned the masked caption), or ``unmasked``, the caption as written. Inference uses the two
    encoders alone (unmasked caption global against image global): with
    ``MODEL.TRAINING_HEADS`` False neither the classifier nor the IRR layers are built, so a
    checkpoint trained on one dataset evaluates on another whatever its number of identities.

    Subclasses add terms by overriding ``losses_from`` (the features of a training batch are
    computed once by ``training_features``) or swap the global term through ``sdm``.
    """

    training_only_prefixes = ("classifier.", "irr.")

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.masked_text:
            raise ValueError(
                "IRRA's global caption is chosen by MODEL.IRR.GLOBAL_CAPTION ('masked': the "
                "caption the IRR branch sees). Set MODEL.RETRIEVAL.MASKED_TEXT False."
            )
        icfg = cfg.MODEL.IRR
        if icfg.GLOBAL_CAPTION not in GLOBAL_CAPTIONS:
            raise ValueError(
                f"MODEL.IRR.GLOBAL_CAPTION={icfg.GLOBAL_CAPTION!r}; expected one of "
                f"{GLOBAL_CAPTIONS}"
            )
        self.global_caption = icfg.GLOBAL_CAPTION
        self.attend_padding = icfg.ATTEND_PADDING
        self.irr_weight = icfg.WEIGHT
        if self.irr_weight > 0 and self.training_heads:
            heads = icfg.HEADS or max(1, self.embed_dim // 64)
            cross = CrossModalTransformer(self.embed_dim, heads, icfg.DEPTH)
            vocab = self.text_encoder.vocab_size
            self.irr = nn.ModuleDict(
                {"cross": cross, "mlm": MLMHead(self.embed_dim, vocab, output_std=cross.proj_std)}
            )

    def new_layers(self):
        """IRRA's optimizer roles: the cross-modal transformer's cross-attention and blocks
        (5x, biases 2x), the MLM head and the classifier (5x); its LayerNorms stay at 1x."""
        roles = super().new_layers()
        cross = head = ()
        if hasattr(self, "irr"):
            cross = tuple(f"irr.cross.{part}." for part in CrossModalTransformer.NEW_LAYERS)
            head = ("irr.mlm.",)
        return {"cross": roles["cross"] + cross, "head": roles["head"] + head}

    def losses(self, batch):
        return self.losses_from(self.training_features(batch), batch)

    def training_features(self, batch):
        """What every loss of a training batch reads, computed once.

        Returns:
            dict: ``pids`` (B,), ``image_tokens`` (B, 1+N, D) (global first), ``text_tokens``
            (B, L, D), ``text_global`` (B, D), ``text_padding`` (B, L) True after EOT, all of
            the caption ``MODEL.IRR.GLOBAL_CAPTION`` names, and ``text_key``, its batch key
            (``text_mlm`` or ``text``).
        """
        masked = self.global_caption == "masked"
        if (self.irr_weight > 0 or masked) and "text_mlm" not in batch:
            raise ValueError(
                "IRRA's IRR branch and MODEL.IRR.GLOBAL_CAPTION 'masked' need the randomly "
                "masked caption: set INPUT.TEXT.VIEWS ['mlm'] (configs/CUHKPEDES/irra.yml "
                "does), or MODEL.IRR.WEIGHT 0 and MODEL.IRR.GLOBAL_CAPTION unmasked."
            )
        key = "text_mlm" if masked else "text"
        image_tokens = self.image_tokens(batch)[2]
        text_tokens, text_global, text_padding = self.caption_features(batch[key])
        return {
            "pids": batch["targets"].to(self.device),
            "image_tokens": image_tokens,
            "text_tokens": text_tokens,
            "text_global": text_global,
            "text_padding": text_padding,
            "text_key": key,
        }

    def losses_from(self, feats, batch):
        """The loss dict of a batch from its ``training_features``."""
        out = self.alignment_losses(
            feats["image_tokens"][:, 0], feats["text_global"], feats["pids"]
        )
        if self.irr_weight > 0:
            masked = None
            if feats.get("text_key") == "text_mlm":  # one encoding serves both branches
                masked = (feats["text_tokens"], feats["text_padding"])
            loss = self.irr_loss(batch, feats["image_tokens"], masked)
            out["loss_irr"] = loss * self.irr_weight
        return out

    def irr_loss(self, batch, image_tokens, masked=None):
        """Masked-token cross-entropy of the masked caption reconstructed from image tokens.

        Args:
            batch (dict): needs ``text_mlm`` (B, L) and ``text_mlm_labels`` (B, L), 0 where
                unmasked.
            image_tokens (Tensor): (B, 1+N, D) keys and values of the cross-attention.
            masked (tuple): the encoded ``text_mlm``, tokens (B, L, D) and padding (B, L), or
                None: encoded here.

        Returns:
            Tensor: () the mean cross-entropy over the batch's masked positions.
        """
        if masked is None:
            masked = self.caption_features(batch["text_mlm"])[::2]
        tokens, padding = masked
        recon = self.irr["cross"](tokens, image_tokens, None if self.attend_padding else padding)
        labels = batch["text_mlm_labels"].to(self.device, non_blocking=True)
        # The vocabulary head runs on the masked positions only (IRRA's runs on all of them).
        loss, accuracy = masked_token_prediction(self.irr["mlm"], recon, labels)
        put_scalars(mlm_acc=accuracy)
        return loss


__all__ = ["GLOBAL_CAPTIONS", "IRRA"]
