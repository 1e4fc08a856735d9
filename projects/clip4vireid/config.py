"""Config keys of CLIP4VI-ReID (``MODEL.CLIP4VI``)."""

from fastreid.config import CfgNode as CN

STAGE_NAMES = ("tsg", "ife", "hsa")
SHARED_BN_MODES = ("train", "frozen")
TSG_TRAIN_DATA = ("features", "images")


def _schedule(epochs, base_lr, warmup_epochs, warmup_start_lr, weight_decay):
    node = CN()
    node.EPOCHS = epochs
    node.BASE_LR = base_lr
    node.WARMUP_EPOCHS = warmup_epochs
    # The lr of the first warm-up epoch, rising linearly to BASE_LR (SOLVER.WARMUP_FACTOR =
    # this / BASE_LR).
    node.WARMUP_START_LR = warmup_start_lr
    # Weight decay of every trained parameter, biases and norms included (SOLVER.WEIGHT_DECAY,
    # WEIGHT_DECAY_NORM, WEIGHT_DECAY_BIAS): not given; CLIP-ReID's, whose stage 1 TSG follows
    # (cnn_clipreid.yml: 1e-4 in stage 1, 5e-4 for the image encoder in stage 2).
    node.WEIGHT_DECAY = weight_decay
    # Images (or features) per step; 0 takes SOLVER.IMS_PER_BATCH, the paper's one batch size
    # ("32 on SYSU-MM01, 16 on RegDB") for every stage.
    node.IMS_PER_BATCH = 0
    return node


def add_clip4vireid_config(cfg):
    """Add ``cfg.MODEL.CLIP4VI`` in place. Idempotent.

    The paper's exponents are garbled in its text (Sec. IV-B2): stages 1-2 warm up from
    "1x 1075" (1e-5, CLIP-ReID's stage-1 WARMUP_LR_INIT) to "3 x 107%" (3e-4), stage 3 from
    "3 x 1079" (3e-6 taken: 0.01 x 3e-4, CLIP-ReID's RN50 stage-2 WARMUP_FACTOR) to 0.0003.
    """
    if hasattr(cfg.MODEL, "CLIP4VI"):
        return cfg
    _C = cfg
    _C.MODEL.CLIP4VI = CN()
    # The stages to run, in order: any of "tsg" (Sec. III-B), "ife" (III-C), "hsa" (III-D).
    _C.MODEL.CLIP4VI.STAGES = list(STAGE_NAMES)
    # T_i = "a photo of a [X_1^i]...[X_M^i] person": the text around the M learned tokens of
    # identity i ("{}" marks them) and M (not given; 4 as in CLIP-ReID and CSDN, which it follows).
    _C.MODEL.CLIP4VI.PROMPT = "a photo of a {} person."
    _C.MODEL.CLIP4VI.NUM_TOKENS = 4  # M
    # Scale of the similarity s(., .) in Eq. 3-4, 6-7, 9-10: cosine x LOGIT_SCALE; 0 takes
    # CLIP's own learned temperature from the weights (100 for OpenAI's RN50), never trained and
    # kept in every checkpoint, so the later stages and --resume use the weights' value.
    _C.MODEL.CLIP4VI.LOGIT_SCALE = 0.0
    _C.MODEL.CLIP4VI.LAMBDA1 = 0.05  # lambda_1 in Eq. 14 (RGB-to-text CE, Eq. 9)
    _C.MODEL.CLIP4VI.LAMBDA2 = 0.05  # lambda_2 in Eq. 14 (IR-to-text CE, Eq. 10)
    # Sec. IV-B2: stages 1-2, 120 epochs, warm-up from 1e-5 to 3e-4 over 5 epochs, then cosine;
    # stage 3, 180 epochs, linear warm-up to 3e-4 over 10 epochs, x0.1 at epochs 60 and 100
    # (counted from the start of the stage: SOLVER.SCHED_UNIT epoch).
    _C.MODEL.CLIP4VI.TSG = _schedule(120, 3.0e-4, 5.0, 1.0e-5, 1.0e-4)
    _C.MODEL.CLIP4VI.IFE = _schedule(120, 3.0e-4, 5.0, 1.0e-5, 5.0e-4)
    _C.MODEL.CLIP4VI.HSA = _schedule(180, 3.0e-4, 10.0, 3.0e-6, 5.0e-4)
    # Where the cosine of stages 1-2 ends, after their last epoch (CLIP-ReID's stage-1 LR_MIN).
    _C.MODEL.CLIP4VI.TSG.ETA_MIN_LR = 1.0e-6
    _C.MODEL.CLIP4VI.IFE.ETA_MIN_LR = 1.0e-6
    # What TSG trains on: "features", E_s(E_v(x)) of every visible training image, extracted
    # once without augmentation and cached (E_v and E_s are frozen; CLIP-ReID's stage 1, which
    # TSG follows), in random batches; "images", augmented visible images in random batches.
    _C.MODEL.CLIP4VI.TSG.TRAIN_DATA = "features"
    _C.MODEL.CLIP4VI.HSA.STEPS = [60, 100]
    # lr factor of the text encoder E_t in HSA (x BASE_LR). 1.0: the paper's one lr for every
    # part HSA trains; RSBA trains the same 63M-parameter tower at 1e-6 (1 / 300 here), and
    # CLIP-ReID keeps it frozen.
    _C.MODEL.CLIP4VI.HSA.TEXT_LR_FACTOR = 1.0
    # The shared encoder E_s's batch norms in HSA, where E_s's parameters are fixed: "train"
    # (statistics from HSA's mixed visible + infrared batches) or "frozen" (eval mode, as IFE
    # left them). "train": after IFE those statistics are infrared-only, so frozen ones would
    # normalise visible images with infrared statistics in HSA and at test; in train mode they
    # follow both modalities and the E_v / E_r that HSA trains (and a PyTorch layer frozen by
    # requires_grad alone behaves so).
    _C.MODEL.CLIP4VI.HSA.SHARED_BN = "train"
    return cfg
