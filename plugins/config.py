"""Config keys the plugin adds to fast-reid's defaults."""

from fastreid.config import CfgNode as CN

from .modeling.clip import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD  # noqa: E402


def add_plugins_config(cfg):
    """Add the plugin's keys to a fast-reid config in place. Idempotent."""
    if hasattr(cfg, "SEED"):
        return cfg
    _C = cfg

    # >= 0 seeds python, numpy and torch after setup and makes CPU runs bit-reproducible.
    _C.SEED = -1
    # "auto": the GPU when there is one, the CPU otherwise. fast-reid's default is "cuda".
    _C.MODEL.DEVICE = "auto"
    _C.MODEL.PIXEL_MEAN = list(CLIP_PIXEL_MEAN)
    _C.MODEL.PIXEL_STD = list(CLIP_PIXEL_STD)
    # Build the parts only training uses (identity classifier, auxiliary reconstruction heads).
    # --eval-only sets it False: evaluation needs no training set to size a classifier.
    _C.MODEL.TRAINING_HEADS = True

    _C.MODEL.CLIP = CN()
    # open_clip architecture ("ViT-B-16", "RN50", ...), a JSON in plugins/modeling/model_configs
    # ("tiny-vit"), or a path to an open_clip JSON model config.
    _C.MODEL.CLIP.NAME = "ViT-B-16"
    # Local weight file: OpenAI .pt (TorchScript or state dict), open_clip .bin/.pt/.safetensors.
    # Loaded exactly when MODEL.BACKBONE.PRETRAIN is True, which then requires a file; with
    # PRETRAIN False it must be empty (random initialisation).
    _C.MODEL.CLIP.WEIGHTS = ""
    # Let a weights file that needs full unpickling load. Unpickling can run any code the file
    # carries: set True only for a file you trust. False: such a file is refused.
    _C.MODEL.CLIP.ALLOW_PICKLE = False
    # Patch stride; < patch size gives overlapping patches. 0: the patch size.
    _C.MODEL.CLIP.STRIDE = 0
    # ResNet CLIP: stride of layer4's first block. 2 is CLIP's (total stride 32, sides divisible
    # by 32); 1 (as CLIP-ReID) halves the total stride to 16, so 288x144 person crops give an
    # 18x9 attention-pool grid (the checkpoint's 7x7 position embedding is resized on load).
    _C.MODEL.CLIP.RESNET_LAST_STRIDE = 2
    # Two-stream ResNet CLIP (plugins.modeling.two_stream): the last stage that is
    # modality-specific ("stem", "layer1", "layer2", "layer3"); the later stages and the
    # attention pool are shared by visible and infrared images. "stem": AGW's split.
    _C.MODEL.CLIP.MODALITY_SPECIFIC = "stem"
    _C.MODEL.CLIP.VOCAB_SIZE = 49409  # 49408 BPE tokens + <|mask|>
    _C.MODEL.CLIP.CONTEXT_LENGTH = 77

    # Shared text-retrieval baseline (CLIP + SDM [+ ID]) and its RGBT variants.
    _C.MODEL.RETRIEVAL = CN()
    # How the image side is formed: "rgb" (the only or RGB image), "t" (thermal alone),
    # "add" (element-wise sum of RGB and thermal tokens), "cat" (concatenate + linear).
    _C.MODEL.RETRIEVAL.FUSION = "rgb"
    # Cat's linear layer: "default" (PyTorch's initialisation, the paper's Cat) or "average"
    # (starts at exactly (V + T) / 2, i.e. as Add).
    _C.MODEL.RETRIEVAL.CAT_INIT = "default"
    _C.MODEL.RETRIEVAL.SDM_WEIGHT = 1.0
    # 1 / tau of the similarity distribution in SDM; IRRA uses tau = 0.02.
    _C.MODEL.RETRIEVAL.LOGIT_SCALE = 50.0
    # Identity classification on both modalities (IRRA's ID loss); 0 disables it.
    _C.MODEL.RETRIEVAL.ID_WEIGHT = 0.0
    # Train on randomly masked captions (the MGANet baseline aligns with masked text).
    _C.MODEL.RETRIEVAL.MASKED_TEXT = False

    # IRRA's implicit relation reasoning (the IRRA meta-architecture and methods built on it):
    # the masked caption attends to the image tokens and its masked words are predicted.
    _C.MODEL.IRR = CN()
    _C.MODEL.IRR.WEIGHT = 1.0  # weight of the masked-language-modelling loss (IRRA: 1)
    _C.MODEL.IRR.DEPTH = 4  # self-attention blocks after the cross-attention (IRRA: 4)
    _C.MODEL.IRR.HEADS = 0  # attention heads; 0: token width // 64 (8 at ViT-B/16's 512)

    _C.INPUT.TEXT = CN()
    _C.INPUT.TEXT.CONTEXT_LENGTH = 77
    _C.INPUT.TEXT.MLM_PROB = 0.15  # share of word tokens masked for masked language modelling
    # Extra caption views the training mapper produces (plugins.data.build.TextViews):
    # "mlm", "color_masked", "nocolor", "nocolor_mlm".
    _C.INPUT.TEXT.VIEWS = []

    # RGBT-PEDES caption file, relative to the dataset folder or absolute.
    _C.DATASETS.CAPTION_FILE = ""
    # RegDB ships ten random train/test identity splits (idx/*_{1..10}.txt); which one to use.
    _C.DATASETS.REGDB_TRIAL = 1
    # VI-ReID image captions (RSBA: written offline by a vision-language model), a JSON object
    # mapping image paths relative to the dataset folder to captions; the file is relative to
    # the dataset folder or absolute. "": no captions (training items carry no "text").
    _C.DATASETS.VI_CAPTIONS = ""
    # Template caption for training images the caption file lacks ("{modality}" becomes
    # "visible" / "infrared"); "": a training image without a caption is an error.
    _C.DATASETS.VI_CAPTION_FALLBACK = ""

    _C.DATALOADER.TEST_NUM_WORKERS = 2
    # Iterations between metric printouts (fast-reid hard-codes 200).
    _C.SOLVER.LOG_PERIOD = 20
    # Parameter groups: "fastreid" (fast-reid's rules: BIAS_LR_FACTOR for parameters named
    # "bias", HEADS_LR_FACTOR for model.heads, WEIGHT_DECAY_NORM) or "irra" (IRRA's rules, see
    # plugins/engine/optimizer.py: every *bias at BIAS_LR_FACTOR without decay, the model's newly
    # initialised layers at NEW_LAYERS_LR_FACTOR, WEIGHT_DECAY on weights and norms alike).
    _C.SOLVER.PARAM_GROUPS = "fastreid"
    _C.SOLVER.NEW_LAYERS_LR_FACTOR = 5.0  # IRRA's lr_factor
    # Autocast dtype of SOLVER.AMP (plugins.engine.amp): "bfloat16" (fp32's exponent range, no
    # gradient scaling, CPU or Ampere+ GPU) or "float16" (CUDA only, with a GradScaler).
    _C.SOLVER.AMP.DTYPE = "bfloat16"
    # Adam / AdamW betas and eps (torch's defaults; IRRA trains with eps 1e-3).
    _C.SOLVER.ADAM_BETAS = [0.9, 0.999]
    _C.SOLVER.ADAM_EPS = 1e-8
    # Also report image-to-text retrieval.
    _C.TEST.I2T = False
    # Gallery of a challenge subset's queries: "all" test images, or "subset" (its own images).
    _C.TEST.SUBSET_GALLERY = "all"
    # Split the evaluations during training use, and so model_best.pth: "test" (fast-reid's
    # habit, and IRRA's) or "val" (datasets without one use test); with "val", the final model
    # and the one selected on val are both evaluated on test at the end.
    _C.TEST.SELECT_ON = "test"
    # Gallery draws of the VI-ReID protocols that draw one (SYSU-MM01, LLCM: 10 in their
    # papers); RegDB has one per evaluation (its trials are training splits).
    _C.TEST.VI_TRIALS = 10
    # Rows of the query x gallery similarity computed at once by the ranking.
    _C.TEST.RANK_CHUNK = 1024
    return cfg


def checkpoint_weights_only(cfg):
    """Set ``cfg`` (unfrozen) so that every weight comes from a checkpoint: the CLIP weights file
    is not read (``MODEL.BACKBONE.PRETRAIN False``, ``MODEL.CLIP.WEIGHTS`` empty)."""
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.CLIP.WEIGHTS = ""
    return cfg


def inference_only(cfg):
    """Set ``cfg`` (unfrozen) as ``--eval-only`` does: weights from the checkpoint only
    (:func:`checkpoint_weights_only`) and no training-only parts (``MODEL.TRAINING_HEADS``
    False: no identity classifier, no auxiliary heads)."""
    cfg.MODEL.TRAINING_HEADS = False
    return checkpoint_weights_only(cfg)
