"""Zero-shot evaluation: the CLIP a config fine-tunes from, evaluated before any training.

The papers report CLIP's zero-shot figures beside the fine-tuned ones; this is that row for any
text-retrieval or CLIP VI-ReID config. For text retrieval the model is ``CLIPRetrieval`` on the
config's CLIP (``MODEL.CLIP.*``, loaded from ``MODEL.CLIP.WEIGHTS`` when
``MODEL.BACKBONE.PRETRAIN``, through the same path as a training) and the config's image input
(``MODEL.RETRIEVAL.FUSION``, ``IMAGE_INPUTS``), without any layer a method adds. For most methods this is their own model at step 0:
IRRA's and FMFA's retrieval features are CLIP's, and MGANet's ATF starts at (V + T) / 2, which
ranks as Add. CoRL's gallery feature also holds its untrained virtual text and Cat fusion starts
from a random layer: their step-0 models are not CLIP's, and the row is CLIP's. A VI-ReID
config's row is its own model before training, without classifier or text tower: both visual
streams are CLIP's image encoder, so visible and infrared images are ranked by CLIP's features.
"""

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_INPUTS", "RESULTS_FILE", "evaluate_zero_shot", "zero_shot_config"]

#: How the zero-shot CLIP sees a text-retrieval gallery item, by ``MODEL.RETRIEVAL.FUSION``
#: (T: thermal; Cat's layer is untrained).
IMAGE_INPUTS = {"rgb": "RGB", "t": "T", "add": "RGB + T added", "cat": "RGB, T, Cat"}

#: Where in OUTPUT_DIR the zero-shot results are written (beside results.json).
RESULTS_FILE = "results_zero_shot.json"


def zero_shot_config(cfg):
    """A frozen copy of a config that builds only the CLIP it starts from: ``CLIPRetrieval`` for
    text retrieval; for VI-ReID the config's own model without its training parts (its two
    visual streams both start as CLIP's image encoder, whose features are ranked)."""
    from plugins.config import resolve_clip_activation
    from plugins.data.datasets.vi_reid import is_vi_dataset

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.TRAINING_HEADS = False  # no identity classifier: evaluation needs none
    if not is_vi_dataset(cfg.DATASETS.TESTS[0]):
        cfg.MODEL.META_ARCHITECTURE = "CLIPRetrieval"
        cfg.MODEL.RETRIEVAL.ID_WEIGHT = 0.0
        cfg.MODEL.RETRIEVAL.MASKED_TEXT = False
    resolve_clip_activation(cfg)  # as a training decides it, from the weights file
    cfg.freeze()
    return cfg


def evaluate_zero_shot(cfg, output_dir=None):
    """Evaluate the starting CLIP of ``cfg`` on ``DATASETS.TESTS``; returns the results dict
    (as ``PluginTrainer.test``) and writes ``RESULTS_FILE`` into ``output_dir`` (default the
    config's OUTPUT_DIR; '' writes nothing)."""
    from plugins.engine.trainer import PluginTrainer

    zcfg = zero_shot_config(cfg)
    if output_dir is not None:
        zcfg.defrost()
        zcfg.OUTPUT_DIR = output_dir
        zcfg.freeze()
    if zcfg.MODEL.BACKBONE.PRETRAIN:
        logger.info(f"Zero-shot: the CLIP of {zcfg.MODEL.CLIP.WEIGHTS}, before fine-tuning")
    else:
        logger.warning("Zero-shot: MODEL.BACKBONE.PRETRAIN is False: a randomly initialised CLIP")
    if cfg.SEED >= 0:
        torch.manual_seed(cfg.SEED)  # a Cat layer, the one random part, drawn reproducibly
    model = PluginTrainer.build_model(zcfg)
    return PluginTrainer.test(zcfg, model, label="zero-shot", results_file=RESULTS_FILE)
