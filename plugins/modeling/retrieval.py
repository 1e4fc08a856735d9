"""Text retrieval meta-architectures: the shared base and the CLIP + SDM baseline."""

import torch
import torch.nn.functional as F
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.utils.events import get_event_storage
from torch import nn

from .clip import CLIPImageEncoder, CLIPTextEncoder, build_clip_model_from_cfg
from .distributed import gather_batch
from .fusion import TokenFusion
from .losses import id_loss, sdm_loss


def put_scalars(**scalars):
    """Log scalars to fast-reid's event storage when training under a trainer.

    Tensors are passed on detached, not converted: fast-reid's storage converts them itself,
    and the plugin's step runner (``plugins.engine.amp``) keeps them on the device until its
    log period, so logging costs no host-device sync inside the step."""
    try:
        storage = get_event_storage()
    except AssertionError:  # no trainer running (unit tests, scripts)
        return
    storage.put_scalars(
        **{k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in scalars.items()}
    )


def register_pixel_statistics(module, cfg):
    """``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` as ``module``'s (1, C, 1, 1) buffers ``pixel_mean`` and
    ``pixel_std``, not saved in checkpoints (they come from the config)."""
    module.register_buffer(
        "pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1), False
    )
    module.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1), False)


def require_training_parts(model):
    """Raise unless ``model`` was built with its training-only parts (``MODEL.TRAINING_HEADS``)."""
    if not model.training_heads:
        raise RuntimeError(
            f"{type(model).__name__} was built without its training-only parts "
            "(MODEL.TRAINING_HEADS False): it can evaluate but not train."
        )


@torch.no_grad()
def batch_t2i_accuracy(image_feats, text_feats, pids):
    """Share of captions whose most similar image in the batch shows their identity.

    image_feats (Tensor): (B, D), text_feats (Tensor): (B, D), pids (Tensor): (B,) -> Tensor: ()
    """
    sim = F.normalize(text_feats, dim=1) @ F.normalize(image_feats, dim=1).t()
    return (pids[sim.argmax(1)] == pids).float().mean()


class RetrievalModel(nn.Module):
    """Base for text-to-image and text-to-RGBT models on one CLIP image and text encoder.

    Training ``forward`` returns only the loss dict (fast-reid sums its values); evaluation
    ``forward`` returns L2-normalisable global features: ``encode_text`` for caption batches
    (``{"text": (B, L)}``), ``encode_image`` for image batches (``{"images": (B, 3, H, W)}``
    in 0-255, plus ``t_images`` for RGBT pairs).

    With ``MODEL.TRAINING_HEADS`` False (``--eval-only``) the parts only training uses are not
    built (the identity classifier here); their checkpoint entries, under
    ``training_only_prefixes``, are then expected to be left over when loading.

    Args:
        cfg (CfgNode): full config; reads ``MODEL.CLIP``, ``MODEL.RETRIEVAL``, pixel mean/std.
    """

    training_only_prefixes = ("classifier.",)

    def __init__(self, cfg):
        super().__init__()
        clip = build_clip_model_from_cfg(cfg)  # MODEL.BACKBONE.PRETRAIN decides
        self.image_encoder = CLIPImageEncoder(clip.visual)
        self.text_encoder = CLIPTextEncoder(clip)
        self.embed_dim = self.image_encoder.embed_dim
        rcfg = cfg.MODEL.RETRIEVAL
        self.fusion = TokenFusion(rcfg.FUSION, self.embed_dim, rcfg.CAT_INIT)
        self.logit_scale = rcfg.LOGIT_SCALE
        self.sdm_weight = rcfg.SDM_WEIGHT
        self.id_weight = rcfg.ID_WEIGHT
        self.masked_text = rcfg.MASKED_TEXT
        num_classes = cfg.MODEL.HEADS.NUM_CLASSES
        self.training_heads = cfg.MODEL.TRAINING_HEADS
        if self.id_weight > 0 and self.training_heads:
            if num_classes <= 0:
                raise ValueError("MODEL.RETRIEVAL.ID_WEIGHT > 0 needs MODEL.HEADS.NUM_CLASSES.")
            self.classifier = nn.Linear(self.embed_dim, num_classes)
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)
        register_pixel_statistics(self, cfg)

    def new_layers(self):
        """Name prefixes of newly initialised layers by IRRA's optimizer rule
        (``plugins.engine.optimizer``): ``cross`` (5x lr, biases 2x) and ``head`` (5x lr).
        The identity classifier is a head as in IRRA; fusion layers with parameters (Cat) are
        cross-modal layers, a choice IRRA (which has none) does not make."""
        fusion = ("fusion.",) if any(True for _ in self.fusion.parameters()) else ()
        return {"cross": fusion, "head": ("classifier.",)}

    @property
    def device(self):
        return self.pixel_mean.device

    def normalize(self, images):
        """0-255 images (B, 3, H, W) -> CLIP-normalised, out of place."""
        return (images.to(self.device, non_blocking=True) - self.pixel_mean) / self.pixel_std

    def image_tokens(self, batch):
        """Modality token sequences of a batch: (V, T, F), each (B, 1+N, D) or None."""
        rgb = t = None
        if self.fusion.needs_rgb:
            rgb = self.image_encoder.forward_tokens(self.normalize(batch["images"]))
        if self.fusion.needs_thermal:
            if "t_images" not in batch:
                raise KeyError(
                    f"MODEL.RETRIEVAL.FUSION={self.fusion.mode!r} needs thermal images "
                    "(t_images); the dataset has none."
                )
            t = self.image_encoder.forward_tokens(self.normalize(batch["t_images"]))
        return rgb, t, self.fusion(rgb, t)

    def text_tokens(self, ids):
        """ids (B, L) -> (tokens (B, L, D), global (B, D))."""
        return self.caption_features(ids)[:2]

    def caption_features(self, ids):
        """ids (B, L) -> tokens (B, L, D), global (B, D), padding mask (B, L), True after EOT."""
        glob, tokens, padding = self.text_encoder(ids.to(self.device, non_blocking=True))
        return tokens, glob, padding

    @torch.no_grad()
    def encode_image(self, batch):
        """Global image (or fused RGBT) feature (B, D)."""
        return self.image_tokens(batch)[2][:, 0]

    @torch.no_grad()
    def encode_text(self, ids):
        """Global caption feature (B, D) of token ids (B, L)."""
        return self.text_tokens(ids)[1]

    def forward(self, batch):
        if self.training:
            require_training_parts(self)
            return self.losses(batch)
        if "text" in batch:
            return self.encode_text(batch["text"])
        return self.encode_image(batch)

    def identity_losses(self, image_feats, text_feats, pids):
        """IRRA's ID loss: one shared classifier on both modalities' global features."""
        image_logits = self.classifier(image_feats)
        text_logits = self.classifier(text_feats)
        loss = (id_loss(image_logits, pids) + id_loss(text_logits, pids)) / 2
        put_scalars(
            img_acc=(image_logits.argmax(1) == pids).float().mean(),
            txt_acc=(text_logits.argmax(1) == pids).float().mean(),
        )
        return loss * self.id_weight

    def losses(self, batch):
        raise NotImplementedError


@META_ARCH_REGISTRY.register()
class CLIPRetrieval(RetrievalModel):
    """Fine-tuned CLIP with SDM (+ ID): text-to-image, or text-to-RGBT with Add / Cat fusion.

    With ``MODEL.RETRIEVAL.MASKED_TEXT`` the text side is the randomly masked caption (the
    MGANet paper's baseline row); it needs ``INPUT.TEXT.VIEWS`` to include ``mlm``.
    """

    def losses(self, batch):
        pids = batch["targets"].to(self.device)
        image_feats = self.image_tokens(batch)[2][:, 0]
        text_ids = batch["text_mlm"] if self.masked_text else batch["text"]
        text_feats = self.text_tokens(text_ids)[1]
        return self.alignment_losses(image_feats, text_feats, pids)

    def sdm(self, image_feats, text_feats, pids):
        """The global alignment term (SDM); subclasses may swap in a variant (FMFA's A-SDM)."""
        return sdm_loss(image_feats, text_feats, pids, self.logit_scale)

    def alignment_losses(self, image_feats, text_feats, pids):
        """``loss_sdm`` (+ ``loss_id``) of global features (B, D) and (B, D); pids (B,), over
        the global batch of all processes."""
        image_feats, text_feats, pids = gather_batch(image_feats, text_feats, pids)
        out = {"loss_sdm": self.sdm(image_feats, text_feats, pids) * self.sdm_weight}
        if self.id_weight > 0:
            out["loss_id"] = self.identity_losses(image_feats, text_feats, pids)
        put_scalars(batch_t2i_acc=batch_t2i_accuracy(image_feats, text_feats, pids))
        return out
