"""AGW's two-stream ResNet for visible-infrared re-identification (``AGWTwoStream``).

Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021; the
network is ``embed_net`` of mangye16/Cross-Modal-Re-ID-baseline (``model.py``):

- a visible and an infrared stem (conv1, bn1, relu, maxpool of a torchvision-style ResNet:
  3x3 max pool with padding 1), one per modality;
- shared layer1-4 with last stride 1 and non-local blocks after the last 2 residual blocks of
  layer2 and the last 3 of layer3 (fast-reid's ``Non_local``, the same function: embedded dot
  product divided by the number of positions, and AGW's inter-channel count
  ``reduc_ratio // reduc_ratio`` = 1);
- generalised-mean pooling ``(mean(x^3) + 1e-12)^(1/3)`` (``AGWGeneralizedMeanPooling``:
  fast-reid's ``GeneralizedMeanPooling`` clamps at 1e-6 instead, which differs on all-zero
  channels);
- a BNNeck (``BatchNorm1d``, bias frozen at 0) and a bias-free classifier.

AGW's ``--method base`` (``embed_net(no_local="off", gm_pool="off")``, ``configs/*/
agw_two_stream_base.yml``) is the same network without non-local blocks
(``MODEL.BACKBONE.WITH_NL False``), with average pooling (``MODEL.AGW.POOL avg``) and its
batch-hard triplet ``OriTripletLoss`` in place of WRT (``MODEL.AGW.TRIPLET hard``: fast-reid's
``triplet_loss`` with hard mining, the same function).

Training returns AGW's losses, the identity cross-entropy of ``classifier(bottleneck(pooled))``
and the weighted regularised triplet on the pooled features (``MODEL.AGW.WRT_FORM``: "code",
AGW's ``TripletLoss_WRT`` exactly, ``agw_wrt_loss``; "text", ``wrt_loss``), or with
``MODEL.AGW.TRIPLET hard`` the batch-hard triplet ``loss_triplet``. Evaluation returns,
as AGW's ``test.py``, the L2-normalised pooled feature (``MODEL.HEADS.NECK_FEAT`` "before") or
BNNeck output ("after").

The shared part is fast-reid's ResNet (``build_resnet_backbone``: ``MODEL.BACKBONE.DEPTH``,
``LAST_STRIDE``, ``WITH_NL``, ``PRETRAIN``, ``PRETRAIN_PATH``) with its stem moved out into the
two streams, both starting from its (ImageNet) stem weights, as AGW's three ImageNet ResNets do.
fast-reid's stem max-pools without padding (``ceil_mode``); AGW's pads by 1, and the streams
use AGW's.

Parity with AGW's code (commit e817a26) is tested on its own outputs (``tests/data/agw_golden``):
features, losses, and ``eval_sysu``'s metrics through ``--eval-only`` with its checkpoint
(``plugins.modeling.agw_checkpoint``). Where the training pipeline still differs from its
``train.py`` (``configs/Base-AGWTwoStream.yml`` holds the recipe):

- resizing: AGW resizes every image once when loading it, with PIL's ``ANTIALIAS`` (Lanczos;
  SYSU-MM01 through ``pre_process_sysu.py``); here fast-reid's transforms resize with bicubic
  interpolation, before padding and cropping (identical when images already have the size);
- evaluation during training: AGW tests every 2 epochs on gallery draw 0 of one mode and keeps
  the best BNNeck R1 (``TEST.EVAL_PERIOD 2`` here runs every mode and ``TEST.VI_TRIALS`` draws);
- sampling: AGW's ``IdentitySampler`` draws from numpy's global generator (``DATALOADER.
  MODALITY_DRAW agw`` draws the same way from a generator seeded per epoch by ``SEED``).

Parameters: ``backbone.visible.*``, ``backbone.infrared.*``, ``backbone.shared.*``,
``heads.bottleneck.*``, ``heads.classifier.*`` (under ``heads`` so that fast-reid's
``SOLVER.HEADS_LR_FACTOR`` gives them AGW's 10x learning rate).
"""

import copy
import functools

import torch
import torch.nn.functional as F
from fastreid.modeling.backbones.resnet import build_resnet_backbone
from fastreid.modeling.losses import triplet_loss
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY
from torch import nn

from .losses import agw_wrt_loss, id_loss, wrt_loss
from .retrieval import register_pixel_statistics, require_training_parts
from .two_stream import route_by_modality

__all__ = [
    "AGWGeneralizedMeanPooling",
    "AGWStem",
    "AGWTwoStream",
    "AGWTwoStreamResNet",
]

POOLS = ("gem", "avg")
TRIPLETS = ("wrt", "hard")


class AGWStem(nn.Module):
    """One modality's stem: conv1, bn1, relu and a 3x3 / stride 2 max pool with padding 1."""

    def __init__(self, conv1: nn.Conv2d, bn1: nn.Module):
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x):
        """x (Tensor): (B, 3, H, W) normalised -> (B, 64, H / 4, W / 4)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class AGWTwoStreamResNet(nn.Module):
    """A visible and an infrared stem, then fast-reid's ResNet stages (non-local blocks
    included) shared by both.

    Args:
        resnet (nn.Module): fast-reid's ``ResNet`` as ``build_resnet_backbone`` builds it; its
            stem weights are copied into both streams and its own stem is removed.
    """

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.visible = AGWStem(copy.deepcopy(resnet.conv1), copy.deepcopy(resnet.bn1))
        self.infrared = AGWStem(copy.deepcopy(resnet.conv1), copy.deepcopy(resnet.bn1))
        # fast-reid's forward runs stem, stages and non-local blocks; without its stem it runs
        # exactly the shared part.
        for name in ("conv1", "bn1", "relu", "maxpool"):
            setattr(resnet, name, nn.Identity())
        self.shared = resnet

    def specific(self, images, modalities):
        """Each image through its modality's stem.

        images (Tensor): (B, 3, H, W) normalised; modalities: (B,) 0 visible, 1 infrared
        returns (Tensor): (B, 64, H / 4, W / 4)
        """
        return route_by_modality(self.visible, self.infrared, images, modalities)

    def forward(self, images, modalities):
        """images (Tensor): (B, 3, H, W) normalised; modalities (B,) -> maps (B, C, h, w)."""
        return self.shared(self.specific(images, modalities))


class AGWGeneralizedMeanPooling(nn.Module):
    """AGW's GeM: ``(mean_hw(x^p) + eps)^(1/p)`` over each channel; x (B, C, H, W) -> (B, C)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-12):
        super().__init__()
        self.p = float(p)
        self.eps = float(eps)

    def forward(self, x):
        return (x.flatten(2).pow(self.p).mean(dim=-1) + self.eps).pow(1.0 / self.p)

    def extra_repr(self):
        return f"p={self.p}, eps={self.eps}"


class _AGWHeads(nn.Module):
    """BNNeck (bias frozen at 0) and a bias-free identity classifier, initialised as AGW's."""

    def __init__(self, feat_dim: int, num_classes: int, with_classifier: bool):
        super().__init__()
        self.bottleneck = nn.BatchNorm1d(feat_dim)
        self.bottleneck.bias.requires_grad_(False)
        nn.init.normal_(self.bottleneck.weight, 1.0, 0.01)  # weights_init_kaiming, BatchNorm1d
        nn.init.zeros_(self.bottleneck.bias)
        if with_classifier:
            self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, 0.0, 0.001)  # weights_init_classifier


@META_ARCH_REGISTRY.register()
class AGWTwoStream(nn.Module):
    """AGW's ``embed_net`` (module docstring) as a fast-reid meta-architecture.

    Batches are ``{"images", "targets", "modalities"}`` (a VI-ReID loader's), images in 0-255.
    Training returns ``{"loss_id", "loss_wrt"}`` (``"loss_triplet"`` with ``MODEL.AGW.TRIPLET
    hard``; each times its ``MODEL.AGW`` weight); evaluation returns L2-normalised (B, D)
    features (``encode_image``).

    Args:
        cfg (CfgNode): ``MODEL.BACKBONE`` (fast-reid's ResNet keys), ``MODEL.BACKBONE.FEAT_DIM``,
            ``MODEL.HEADS.{NUM_CLASSES,NECK_FEAT}``, ``MODEL.AGW.{POOL,GEM_P,GEM_EPS,ID_WEIGHT,
            WRT_WEIGHT,WRT_FORM,TRIPLET,TRIPLET_MARGIN}``, ``MODEL.TRAINING_HEADS``,
            ``MODEL.PIXEL_{MEAN,STD}``.
    """

    training_only_prefixes = ("heads.classifier.",)

    def __init__(self, cfg):
        super().__init__()
        self.backbone = AGWTwoStreamResNet(build_resnet_backbone(cfg))
        agw = cfg.MODEL.AGW
        if agw.POOL not in POOLS:
            raise ValueError(f"MODEL.AGW.POOL={agw.POOL!r} not in {POOLS}")
        self.non_local = bool(cfg.MODEL.BACKBONE.WITH_NL)
        self.pool_kind = agw.POOL
        if agw.POOL == "gem":
            self.pool = AGWGeneralizedMeanPooling(agw.GEM_P, agw.GEM_EPS)
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.neck_feat = cfg.MODEL.HEADS.NECK_FEAT
        if self.neck_feat not in ("before", "after"):
            raise ValueError(f"MODEL.HEADS.NECK_FEAT={self.neck_feat!r}: 'before' or 'after'")
        self.training_heads = cfg.MODEL.TRAINING_HEADS
        self.num_classes = cfg.MODEL.HEADS.NUM_CLASSES
        if self.training_heads and self.num_classes <= 0:
            raise ValueError("AGWTwoStream needs MODEL.HEADS.NUM_CLASSES > 0")
        self.heads = _AGWHeads(cfg.MODEL.BACKBONE.FEAT_DIM, self.num_classes, self.training_heads)
        self.id_weight = agw.ID_WEIGHT
        self.triplet_weight = agw.WRT_WEIGHT
        forms = {"code": agw_wrt_loss, "text": wrt_loss}
        if agw.WRT_FORM not in forms:
            raise ValueError(f"MODEL.AGW.WRT_FORM={agw.WRT_FORM!r} not in {tuple(forms)}")
        if agw.TRIPLET not in TRIPLETS:
            raise ValueError(f"MODEL.AGW.TRIPLET={agw.TRIPLET!r} not in {TRIPLETS}")
        if agw.TRIPLET == "wrt":
            self.triplet_name, self.triplet = "loss_wrt", forms[agw.WRT_FORM]
        else:
            self.triplet_name = "loss_triplet"
            self.triplet = functools.partial(
                triplet_loss, margin=agw.TRIPLET_MARGIN, norm_feat=False, hard_mining=True
            )
        register_pixel_statistics(self, cfg)

    @property
    def device(self):
        return self.pixel_mean.device

    def normalize(self, images):
        """0-255 images (B, 3, H, W) -> normalised by ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``."""
        return (images.to(self.device, non_blocking=True) - self.pixel_mean) / self.pixel_std

    def pooled_features(self, images, modalities):
        """AGW's ``x_pool``: normalised images (B, 3, H, W), modalities (B,) -> (B, D)."""
        return self.pool(self.backbone(images, modalities))

    def _modalities(self, batch):
        if "modalities" not in batch:
            raise KeyError(
                "AGWTwoStream routes images by modality: the batch needs 'modalities' "
                "(a VI-ReID dataset's loader gives them)"
            )
        return batch["modalities"]

    @torch.no_grad()
    def encode_image(self, batch):
        """L2-normalised retrieval features (B, D): the pooled feature or the BNNeck output."""
        feats = self.pooled_features(self.normalize(batch["images"]), self._modalities(batch))
        if self.neck_feat == "after":
            feats = self.heads.bottleneck(feats)
        return F.normalize(feats, dim=1)

    def losses(self, batch):
        """AGW's ``train.py``: identity cross-entropy and WRT, both over the whole batch."""
        feats = self.pooled_features(self.normalize(batch["images"]), self._modalities(batch))
        targets = batch["targets"].to(self.device)
        logits = self.heads.classifier(self.heads.bottleneck(feats))
        return {
            "loss_id": self.id_weight * id_loss(logits, targets),
            self.triplet_name: self.triplet_weight * self.triplet(feats, targets),
        }

    def forward(self, batch):
        if self.training:
            require_training_parts(self)
            return self.losses(batch)
        return self.encode_image(batch)
