"""Config keys the plugin adds to fast-reid's defaults."""

import torch
from fastreid.config import CfgNode as CN

from .modeling.clip import (
    CLIP_PIXEL_MEAN,
    CLIP_PIXEL_STD,
    architecture_quick_gelu,
    clip_file_is_openai,
    quick_gelu_setting,
    resolve_clip_weights,
)
from .modeling.irra_checkpoint import is_irra_checkpoint


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
    # CLIP's MLP activation, part of the model: "auto" (None) decides once, when the model is
    # first built: QuickGELU for OpenAI-format weights files (OpenAI trained with it), else the
    # architecture's own (GELU for ViT-B-16, QuickGELU for open_clip's *-quickgelu names); a
    # model built from a checkpoint takes the value the checkpoint records. True / False force
    # it (pass True for OpenAI's weights re-saved in open_clip's layout, which cannot be told
    # apart from open_clip's own). The resolved value is written to config.yaml and to every
    # checkpoint (plugins.config.resolve_clip_activation).
    _C.MODEL.CLIP.QUICKGELU = None
    # How the weights file's square grid of position embeddings (ViT; a ResNet's attention
    # pool) is resized to the model's: "bilinear" as IRRA and CLIP-ReID (no antialiasing) or
    # "bicubic" (with antialiasing).
    _C.MODEL.CLIP.POS_EMBED_RESIZE = "bilinear"
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

    # AGW's two-stream ResNet (AGWTwoStream; Ye et al., TPAMI'21, mangye16/Cross-Modal-Re-ID-
    # baseline model.py): generalised-mean pooling (mean(x^p) + eps)^(1/p) and its losses.
    _C.MODEL.AGW = CN()
    _C.MODEL.AGW.GEM_P = 3.0  # p of GeM (AGW: 3.0)
    _C.MODEL.AGW.GEM_EPS = 1e-12  # added to the mean before the root (AGW: 1e-12)
    _C.MODEL.AGW.ID_WEIGHT = 1.0  # identity cross-entropy, no label smoothing (AGW: 1)
    _C.MODEL.AGW.WRT_WEIGHT = 1.0  # weighted regularised triplet on pooled features (AGW: 1)
    # Which weighted regularised triplet: "code", AGW's TripletLoss_WRT (loss.py: + 1e-6 in the
    # softmax normaliser, negatives unshifted, so far negatives drop out; agw_wrt_loss), or
    # "text", the softmax-weighted form as the paper states it (wrt_loss).
    _C.MODEL.AGW.WRT_FORM = "code"
    # AGW's train.py --method: "agw" pools with GeM and trains WRT; "base" average-pools and
    # trains OriTripletLoss (batch-hard triplet, margin TRIPLET_MARGIN) and has no non-local
    # blocks (MODEL.BACKBONE.WITH_NL False). The triplet term's weight is WRT_WEIGHT either way.
    _C.MODEL.AGW.POOL = "gem"  # "gem" (AGW) or "avg" (--method base)
    _C.MODEL.AGW.TRIPLET = "wrt"  # "wrt" (AGW) or "hard" (--method base)
    _C.MODEL.AGW.TRIPLET_MARGIN = 0.3  # OriTripletLoss's margin (train.py --margin)

    # IRRA's implicit relation reasoning (the IRRA meta-architecture and methods built on it):
    # the masked caption attends to the image tokens and its masked words are predicted.
    _C.MODEL.IRR = CN()
    _C.MODEL.IRR.WEIGHT = 1.0  # weight of the masked-language-modelling loss (IRRA: 1)
    _C.MODEL.IRR.DEPTH = 4  # self-attention blocks after the cross-attention (IRRA: 4)
    _C.MODEL.IRR.HEADS = 0  # attention heads; 0: token width // 64 (8 at ViT-B/16's 512)
    # Whether the IRR self-attention blocks attend to the padding positions after the caption's
    # end token: True as IRRA's code (its cross-modal Transformer has no mask, so the masked
    # words' features depend on the padding's), False masks them out.
    _C.MODEL.IRR.ATTEND_PADDING = True
    # The caption whose global (and token) features the global losses (SDM / A-SDM, ID, FMFA's
    # EFA) see: "masked", the randomly masked caption the IRR branch sees, one masking draw and
    # one encoding for both (IRRA's and FMFA's public code: their dataset masks the caption
    # ids in place, datasets/bases.py); "unmasked", the caption as written (the papers' text).
    # Evaluation always encodes the unmasked caption. Needs INPUT.TEXT.VIEWS ["mlm"] if masked.
    _C.MODEL.IRR.GLOBAL_CAPTION = "masked"

    _C.INPUT.TEXT = CN()
    _C.INPUT.TEXT.CONTEXT_LENGTH = 77
    _C.INPUT.TEXT.MLM_PROB = 0.15  # share of word tokens masked for masked language modelling
    # Extra caption views the training mapper produces (plugins.data.build.TextViews):
    # "mlm", "color_masked", "nocolor", "nocolor_mlm".
    _C.INPUT.TEXT.VIEWS = []
    # The text-retrieval image transform (plugins.data.transforms.PairTransform) follows IRRA's
    # datasets/build.py by default; fast-reid's own transforms (the VI-ReID configs) ignore these.
    # Resize filter: "bilinear" (IRRA, torchvision's default) or "bicubic".
    _C.INPUT.RESIZE_INTERPOLATION = "bilinear"
    # Erased area relative to the image: IRRA's (0.02, 0.4); torchvision's default (0.02, 0.33).
    _C.INPUT.REA.SCALE = [0.02, 0.4]
    # Erased pixels: "normalised_mean" (IRRA: equal to the mean MODEL.PIXEL_MEAN / 255 after the
    # model's normalisation, about (156, 147, 133) for CLIP) or "value" (INPUT.REA.VALUE, 0-255).
    _C.INPUT.REA.FILL = "normalised_mean"

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
    # The modality of the VI-ReID training images the loader serves: "both", or "visible" /
    # "infrared" only (CLIP4VI-ReID's TSG and IFE stages set it; identities keep their labels).
    _C.DATASETS.VI_TRAIN_MODALITY = "both"

    _C.DATALOADER.TEST_NUM_WORKERS = 2
    # What one training epoch is (iterations per epoch, hence MAX_EPOCH, STEPS and warm-ups in
    # epochs): "images", fast-reid's len(training set) // SOLVER.IMS_PER_BATCH (visible plus
    # infrared images for VI-ReID); "sampler", the epoch of the plugin's training sampler: with
    # ModalityIdentitySampler the count of AGW's, CAJ's and DEEN's two-modality IdentitySampler,
    # int(max(n_visible, n_infrared) / (P K)) + 1 batches of P identities x (K + K) images (P K =
    # IMS_PER_BATCH / 2), with the random and identity samplers len(training set) //
    # IMS_PER_BATCH. The paper-following CLIP VI-ReID configs (Base-CLIP-VIReID.yml) use "sampler".
    _C.DATALOADER.VI_EPOCH = "images"
    # How ModalityIdentitySampler fills a batch: "cover" (each identity's items shuffled and
    # dealt K at a time, every item drawn once an epoch) or "agw" (AGW's IdentitySampler,
    # utils.py: P identities without replacement, K items per modality with replacement).
    _C.DATALOADER.MODALITY_DRAW = "cover"
    # Iterations between metric printouts (fast-reid hard-codes 200).
    _C.SOLVER.LOG_PERIOD = 20
    # Parameter groups: "fastreid" (fast-reid's rules: BIAS_LR_FACTOR for parameters named
    # "bias", HEADS_LR_FACTOR for model.heads, WEIGHT_DECAY_NORM) or "irra" (IRRA's rules, see
    # plugins/engine/optimizer.py: every *bias at BIAS_LR_FACTOR without decay, the model's newly
    # initialised layers at NEW_LAYERS_LR_FACTOR, WEIGHT_DECAY on weights and norms alike).
    _C.SOLVER.PARAM_GROUPS = "fastreid"
    _C.SOLVER.NEW_LAYERS_LR_FACTOR = 5.0  # IRRA's lr_factor
    # How the lr schedule steps. "iteration": fast-reid's (warm-up over WARMUP_ITERS iterations,
    # then SCHED stepped after each later epoch, STEPS counted after the warm-up). "epoch": one
    # lr per epoch, set before its first iteration, as IRRA's LRSchedulerWithWarmup (solver/
    # lr_scheduler.py, stepped per epoch): WARMUP_EPOCHS epochs from WARMUP_FACTOR ("linear" or
    # "constant"), then SCHED "CosineAnnealingLR" (to ETA_MIN_LR over the other MAX_EPOCH -
    # WARMUP_EPOCHS epochs) or "MultiStepLR" (GAMMA at each of STEPS, epochs counted from the
    # start: STEPS [60] decays epochs 61, 62, ...); every group keeps its own lr factor.
    # WARMUP_ITERS and DELAY_EPOCHS must then be 0 (plugins/engine/lr_schedule.py).
    _C.SOLVER.SCHED_UNIT = "iteration"
    _C.SOLVER.WARMUP_EPOCHS = 0  # whole epochs; SCHED_UNIT epoch only
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
    # LLCM VIS-to-IR: "published" (DEEN's test.py, test_mode [2, 1], and every published table:
    # the drawn near-infrared images are the queries, every visible image the gallery) or
    # "literal" (every visible image queries the drawn near-infrared images).
    _C.TEST.LLCM_VIS2IR = "published"
    # Rows of the query x gallery similarity computed at once by the ranking.
    _C.TEST.RANK_CHUNK = 1024
    return cfg


# What a rebuild needs to compute the checkpoint's function beyond its tensors' shapes: a
# checkpoint records these config keys (plugins.engine.checkpoint.Checkpointer, from the model it
# saves), and every model rebuilt from a checkpoint takes them from there.
RECORD_ENTRY = "model_record"
QUICKGELU_KEY = "MODEL.CLIP.QUICKGELU"


def read_model_record(path):
    """The model record of a checkpoint file ({} when it has none; an unreadable file gives {}
    too, and the checkpoint loader then says what is wrong with it). A checkpoint of IRRA's or
    FMFA's code records nothing but always describes a QuickGELU CLIP."""
    checkpoint = None
    for mmap in (True, False):  # mmap reads no tensor, but only zip-format files
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception:  # noqa: BLE001  (any failure is the loader's to report)
            continue
    if is_irra_checkpoint(checkpoint):
        return {QUICKGELU_KEY: True}  # IRRA's and FMFA's CLIP always use QuickGELU
    record = checkpoint.get(RECORD_ENTRY) if isinstance(checkpoint, dict) else None
    return dict(record) if isinstance(record, dict) else {}


def resolve_clip_activation(cfg, checkpoint=None):
    """Decide ``MODEL.CLIP.QUICKGELU`` once (``cfg`` unfrozen); returns a line saying why.

    A model built from ``checkpoint`` (a file every weight comes from) takes the activation the
    checkpoint records; an explicit True / False that contradicts it is an error (a checkpoint
    describes its model). Without a checkpoint, "auto" becomes QuickGELU for an OpenAI-format
    ``MODEL.CLIP.WEIGHTS`` file and the architecture's own activation otherwise.
    """
    requested = quick_gelu_setting(cfg.MODEL.CLIP.QUICKGELU)
    name = cfg.MODEL.CLIP.NAME
    recorded = read_model_record(checkpoint).get(QUICKGELU_KEY) if checkpoint else None
    if recorded is not None:
        if requested is not None and requested != recorded:
            raise ValueError(
                f"MODEL.CLIP.QUICKGELU is {requested} but {checkpoint} records a model built "
                f"with {_activation_name(recorded)}: a checkpoint computes its function only "
                "with the activation it was trained with; drop the override (or set it to auto)"
            )
        value, why = recorded, f"recorded in {checkpoint}"
    elif requested is not None:
        value, why = requested, "MODEL.CLIP.QUICKGELU"
    elif checkpoint:
        value = architecture_quick_gelu(name)
        why = (
            f"{checkpoint} records no activation, so {name}'s own; pass MODEL.CLIP.QUICKGELU "
            "True if it was fine-tuned from OpenAI's weights"
        )
    elif cfg.MODEL.BACKBONE.PRETRAIN and cfg.MODEL.CLIP.WEIGHTS:
        path = resolve_clip_weights(cfg.MODEL.CLIP.WEIGHTS, name)
        if clip_file_is_openai(path, cfg.MODEL.CLIP.ALLOW_PICKLE):
            value, why = True, f"{path} is in OpenAI's format, trained with QuickGELU"
        else:
            value = architecture_quick_gelu(name)
            why = (
                f"{name}'s own for the open_clip-format {path}; pass MODEL.CLIP.QUICKGELU True "
                "for OpenAI's weights re-saved in open_clip's layout"
            )
    else:
        value, why = architecture_quick_gelu(name), f"{name}'s own"
    cfg.MODEL.CLIP.QUICKGELU = value
    return f"CLIP activation: {_activation_name(value)} ({why})."


def _activation_name(quick_gelu):
    return "QuickGELU" if quick_gelu else "GELU"


def checkpoint_weights_only(cfg, checkpoint):
    """Set ``cfg`` (unfrozen) so that every weight comes from ``checkpoint``: the CLIP weights
    file is not read (``MODEL.BACKBONE.PRETRAIN False``, ``MODEL.CLIP.WEIGHTS`` empty) and what
    the checkpoint records of its model (CLIP's activation) is taken from it. Returns the line
    of :func:`resolve_clip_activation`."""
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.CLIP.WEIGHTS = ""
    return resolve_clip_activation(cfg, checkpoint)


def inference_only(cfg, checkpoint):
    """Set ``cfg`` (unfrozen) as ``--eval-only`` does: weights and model record from
    ``checkpoint`` only (:func:`checkpoint_weights_only`) and no training-only parts
    (``MODEL.TRAINING_HEADS`` False: no identity classifier, no auxiliary heads)."""
    cfg.MODEL.TRAINING_HEADS = False
    return checkpoint_weights_only(cfg, checkpoint)
