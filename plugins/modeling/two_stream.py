"""Two-stream CLIP ResNet for visible-infrared re-identification, and the base model of the
CLIP-based VI-ReID methods (CLIP4VI-ReID, RSBA).

A CLIP ModifiedResNet is split after one of its stages: the stages up to ``split``
(``MODEL.CLIP.MODALITY_SPECIFIC``: "stem", "layer1", "layer2" or "layer3") are copied into a
visible and an infrared stream, both starting from CLIP's weights; the later stages and the
attention pool are shared. "stem" is AGW's split (two parallel first convolution layers, shared
four residual stages), which RSBA follows; CLIP4VI-ReID's "modality-specific first blocks and a
shared encoder of the last four blocks" is the same split of CLIP's ResNet-50.

Images of both modalities may share a batch: each image goes through its own stream (batch
norm statistics of a stream come from its own images only), the shared part sees them all.
"""

import copy
import logging

import torch
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from .clip import CLIPTextEncoder, build_clip_model_from_cfg, resnet_attention_pool
from .retrieval import register_pixel_statistics, require_training_parts

logger = logging.getLogger(__name__)

__all__ = [
    "MODALITY_SPLITS",
    "TwoStreamCLIPResNet",
    "VICLIPModel",
    "freeze_frozen_norms",
    "modality_masks",
    "paired_halves",
    "route_by_modality",
]

#: Where a two-stream split may be: the last modality-specific stage.
MODALITY_SPLITS = ("stem", "layer1", "layer2", "layer3")
_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
VISIBLE, INFRARED = 0, 1


class _Stem(nn.Module):
    """ModifiedResNet's three-convolution stem and its average pool, with the same names."""

    def __init__(self, visual: ModifiedResNet):
        super().__init__()
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3"):
            setattr(self, name, getattr(visual, name))
        self.avgpool = visual.avgpool

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.avgpool(x)


def _stages(visual: ModifiedResNet, names):
    return nn.Sequential(
        *[_Stem(visual) if name == "stem" else getattr(visual, name) for name in names]
    )


def modality_masks(modalities, batch_size, device):
    """Boolean (B,) masks of the visible and infrared images of a batch.

    modalities (Tensor | Sequence[int]): (B,), 0 visible, 1 infrared.
    """
    codes = torch.as_tensor(modalities, device=device).reshape(-1).long()
    if codes.numel() != batch_size:
        raise ValueError(f"{codes.numel()} modality codes for a batch of {batch_size} images")
    unknown = sorted(set(codes.tolist()) - {VISIBLE, INFRARED})
    if unknown:
        raise ValueError(f"modality codes must be 0 (visible) or 1 (infrared), got {unknown}")
    return codes == VISIBLE, codes == INFRARED


def route_by_modality(visible, infrared, images, modalities):
    """Each image through its modality's module: ``visible`` for 0, ``infrared`` for 1 (a batch
    of one modality runs that module alone). Both must give outputs of one shape per image.

    images (Tensor): (B, ...); modalities (Tensor): (B,) -> (B, ...) the modules' outputs
    """
    vis, ir = modality_masks(modalities, images.shape[0], images.device)
    if bool(vis.all()):
        return visible(images)
    if bool(ir.all()):
        return infrared(images)
    out_vis, out_ir = visible(images[vis]), infrared(images[ir])
    out = out_vis.new_empty((images.shape[0], *out_vis.shape[1:]))
    out[vis], out[ir] = out_vis, out_ir
    return out


class TwoStreamCLIPResNet(nn.Module):
    """CLIP ModifiedResNet with modality-specific early stages and shared later ones.

    Parameters are named ``visible.*`` and ``infrared.*`` (the two streams, identical at
    construction) and ``shared.*`` (the later stages; ``shared.attnpool`` is CLIP's attention
    pool), so training stages can freeze each by prefix.

    Args:
        visual (ModifiedResNet): CLIP's image tower, as built (weights loaded, grid set).
        split (str): the last modality-specific stage, one of ``MODALITY_SPLITS``.
    """

    def __init__(self, visual: ModifiedResNet, split: str = "stem"):
        super().__init__()
        if not isinstance(visual, ModifiedResNet):
            raise TypeError(
                f"a two-stream backbone needs a ResNet CLIP (MODEL.CLIP.NAME RN50, tiny-rn, ...), "
                f"got a {type(visual).__name__}"
            )
        if split not in MODALITY_SPLITS:
            raise ValueError(f"MODEL.CLIP.MODALITY_SPECIFIC={split!r} not in {MODALITY_SPLITS}")
        cut = _STAGES.index(split) + 1
        self.split = split
        self.visible = _stages(visual, _STAGES[:cut])
        self.infrared = copy.deepcopy(self.visible)
        self.shared = nn.Module()
        self.shared.stages = _stages(visual, _STAGES[cut:])
        self.shared.attnpool = visual.attnpool
        self.grid_size = tuple(visual.grid_size)
        self.embed_dim = visual.output_dim

    def specific(self, images, modalities):
        """Modality-specific maps: each image through its own stream.

        images (Tensor): (B, 3, H, W) normalised; modalities: (B,) 0 visible / 1 infrared
        returns (Tensor): (B, C, h, w)
        """
        return route_by_modality(self.visible, self.infrared, images, modalities)

    def shared_forward(self, maps):
        """Shared stages and attention pool: (B, C, h, w) -> global feature (B, D)."""
        x = self.shared.stages(maps)
        expected = self.grid_size[0] * self.grid_size[1]
        if x.shape[2] * x.shape[3] != expected:
            raise ValueError(
                f"the shared stages give a {tuple(x.shape[2:])} grid, but the attention pool was "
                f"built for {self.grid_size}: evaluate at the training image size"
            )
        return resnet_attention_pool(self.shared.attnpool, x, self.training, False)[:, 0]

    def forward(self, images, modalities):
        """images (Tensor): (B, 3, H, W) normalised; modalities (B,) -> (B, D) global features."""
        return self.shared_forward(self.specific(images, modalities))


def freeze_frozen_norms(module: nn.Module, keep_training=()):
    """Put every batch norm whose parameters are all frozen in eval mode.

    A frozen stage must not move: in train mode a batch norm would still normalise with batch
    statistics and overwrite its running ones. Call after ``module.train()``.

    Args:
        keep_training (tuple[str]): module-name prefixes whose batch norms stay in train mode
            even when frozen (their statistics follow the batches, their affine parameters not).
    """
    for name, m in module.named_modules():
        if keep_training and name.startswith(tuple(keep_training)):
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                m.eval()


def paired_halves(modalities, pids):
    """Indices of the visible and the infrared images of a two-modality PK batch, paired.

    ``ModalityIdentitySampler`` puts the visible images first and the infrared ones in the same
    identity order, so visible image ``i`` and infrared image ``i`` share an identity (the
    (x_i^vis, x_i^ir) pairs of RSBA, IJCAI'25, Sec. 3.1). Any batch is accepted whose two halves
    list the same identities in the same order.

    Returns:
        (Tensor, Tensor): (N,) long indices of the visible and the infrared images.
    """
    vis, ir = modality_masks(modalities, len(pids), pids.device)
    vis_idx, ir_idx = torch.nonzero(vis)[:, 0], torch.nonzero(ir)[:, 0]
    if vis_idx.numel() != ir_idx.numel() or not torch.equal(pids[vis_idx], pids[ir_idx]):
        raise ValueError(
            "the batch's visible and infrared images are not paired by identity (visible "
            f"{pids[vis_idx].tolist()}, infrared {pids[ir_idx].tolist()}): train with "
            "DATALOADER.SAMPLER_TRAIN ModalityIdentitySampler"
        )
    return vis_idx, ir_idx


class VICLIPModel(nn.Module):
    """Base of the CLIP VI-ReID meta-architectures: two-stream visual encoder, CLIP's text
    encoder, a BNNeck identity classifier.

    Evaluation ``forward`` returns the image features of ``{"images", "modalities"}`` batches:
    the pooled feature (``MODEL.HEADS.NECK_FEAT`` "before", fast-reid's and CLIP-ReID's
    default) or the BNNeck output ("after"). Training ``forward`` returns the subclass's loss dict. Parameters:
    ``visual.{visible,infrared,shared}.*``, ``text.*`` (CLIP's text tower), ``bottleneck.*`` and
    ``classifier.*``; ``text`` and the classifier are not built with ``MODEL.TRAINING_HEADS``
    False (``--eval-only``).

    Args:
        cfg (CfgNode): reads ``MODEL.CLIP`` (``NAME`` a ResNet, ``MODALITY_SPECIFIC``,
            ``RESNET_LAST_STRIDE``), ``MODEL.HEADS.{NUM_CLASSES,NECK_FEAT}``, pixel mean / std.
    """

    training_only_prefixes = ("classifier.", "text.")
    #: Whether ``clip_logit_scale`` is saved in checkpoints (models whose losses use it), and
    #: the config key that fixes the scale instead.
    records_clip_logit_scale = False
    logit_scale_key = ""
    #: Module-name prefixes of frozen batch norms that stay in train mode (see ``train``).
    train_mode_norms = ()

    def __init__(self, cfg):
        super().__init__()
        clip = build_clip_model_from_cfg(cfg)  # MODEL.BACKBONE.PRETRAIN decides
        self.visual = TwoStreamCLIPResNet(clip.visual, cfg.MODEL.CLIP.MODALITY_SPECIFIC)
        # Both methods align with text in training only: evaluation builds no text tower.
        self.text = CLIPTextEncoder(clip) if cfg.MODEL.TRAINING_HEADS else None
        self.embed_dim = self.visual.embed_dim
        # CLIP's temperature (no stage trains it). A model whose losses use it saves it in every
        # checkpoint: a model rebuilt from one (a later stage, --resume) is built without the
        # CLIP weights, with open_clip's initial 1 / 0.07, and must take the checkpoint's.
        self.register_buffer(
            "clip_logit_scale",
            clip.logit_scale.detach().exp().clone(),
            persistent=self.records_clip_logit_scale,
        )
        self.bottleneck = nn.BatchNorm1d(self.embed_dim)
        self.bottleneck.bias.requires_grad_(False)  # BNNeck (Luo et al.): no shift
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        self.neck_feat = cfg.MODEL.HEADS.NECK_FEAT
        if self.neck_feat not in ("before", "after"):
            raise ValueError(f"MODEL.HEADS.NECK_FEAT={self.neck_feat!r}: 'before' or 'after'")
        self.training_heads = cfg.MODEL.TRAINING_HEADS
        self.num_classes = cfg.MODEL.HEADS.NUM_CLASSES
        if self.training_heads:
            if self.num_classes <= 0:
                raise ValueError(f"{type(self).__name__} needs MODEL.HEADS.NUM_CLASSES > 0")
            self.classifier = nn.Linear(self.embed_dim, self.num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)
        register_pixel_statistics(self, cfg)

    @property
    def device(self):
        return self.pixel_mean.device

    def train(self, mode=True):
        super().train(mode)
        if mode:
            freeze_frozen_norms(self, self.train_mode_norms)
        return self

    @property
    def optional_state(self):
        """State-dict entries a checkpoint may lack (``plugins.engine.checkpoint``): the saved
        temperature, which checkpoints written before it was saved do not have."""
        return ("clip_logit_scale",) if self.records_clip_logit_scale else ()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "clip_logit_scale"
        if self.records_clip_logit_scale and key not in state_dict:
            # A checkpoint written before the temperature was saved: keep the built value.
            state_dict = dict(state_dict)
            state_dict[key] = self.clip_logit_scale
            if self.training_heads:  # inference does not use it
                logger.warning(
                    "The checkpoint has no CLIP temperature (clip_logit_scale: it was written "
                    f"before checkpoints kept it): keeping this model's "
                    f"{float(self.clip_logit_scale):.2f}. A model built without the CLIP weights "
                    "has open_clip's initial 1 / 0.07 = 14.29, not the weights' own (100 for "
                    f"OpenAI's RN50): set {self.logit_scale_key or 'the scale'} to the value it "
                    "trained with."
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalize(self, images):
        """0-255 images (B, 3, H, W) -> CLIP-normalised."""
        return (images.to(self.device, non_blocking=True) - self.pixel_mean) / self.pixel_std

    def image_features(self, batch):
        """Pooled visual features (B, D) of ``batch["images"]`` by ``batch["modalities"]``."""
        if "modalities" not in batch:
            raise KeyError(
                f"{type(self).__name__} routes images by modality: the batch needs "
                "'modalities' (a VI-ReID dataset's loader gives them)"
            )
        return self.visual(self.normalize(batch["images"]), batch["modalities"])

    def identity_logits(self, feats):
        """BNNeck then the classifier: (B, D) -> (B, num_classes)."""
        return self.classifier(self.bottleneck(feats))

    @torch.no_grad()
    def encode_image(self, batch):
        """Retrieval features (B, D): the BNNeck output or the pooled feature."""
        feats = self.image_features(batch)
        return self.bottleneck(feats) if self.neck_feat == "after" else feats

    def forward(self, batch):
        if self.training:
            require_training_parts(self)
            return self.losses(batch)
        return self.encode_image(batch)

    def losses(self, batch):
        raise NotImplementedError
