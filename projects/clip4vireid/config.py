"""Config keys of CLIP4VI-ReID (``MODEL.CLIP4VI``)."""

from fastreid.config import CfgNode as CN

STAGE_NAMES = ("tsg", "ife", "hsa")


def _schedule(epochs, base_lr, warmup_epochs, warmup_start_lr):
    node = CN()
    node.EPOCHS = epochs
    node.BASE_LR = base_lr
    node.WARMUP_EPOCHS = warmup_epochs
    # The lr the linear warm-up starts from (SOLVER.WARMUP_FACTOR = this / BASE_LR).
    node.WARMUP_START_LR = warmup_start_lr
    return node


def add_clip4vireid_config(cfg):
    """Add ``cfg.MODEL.CLIP4VI`` in place. Idempotent.

    The paper's exponents are garbled in its text: stages 1-2 warm up from "1x 1075" (read as
    1e-6) to "3 x 107%" (3e-4), stage 3 from "3 x 1079" (unreadable; 3e-6 taken) to 0.0003.
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
    # CLIP's own learned temperature from the weights (100 for OpenAI's RN50), never trained.
    _C.MODEL.CLIP4VI.LOGIT_SCALE = 0.0
    _C.MODEL.CLIP4VI.LAMBDA1 = 0.05  # lambda_1 in Eq. 14 (RGB-to-text CE, Eq. 9)
    _C.MODEL.CLIP4VI.LAMBDA2 = 0.05  # lambda_2 in Eq. 14 (IR-to-text CE, Eq. 10)
    # Sec. IV-B2: stages 1-2, 120 epochs, warm-up from 1e-6 to 3e-4 over 5 epochs, then cosine;
    # stage 3, 180 epochs, linear warm-up to 3e-4 over 10 epochs, x0.1 at epochs 60 and 100.
    _C.MODEL.CLIP4VI.TSG = _schedule(120, 3.0e-4, 5.0, 1.0e-6)
    _C.MODEL.CLIP4VI.IFE = _schedule(120, 3.0e-4, 5.0, 1.0e-6)
    _C.MODEL.CLIP4VI.HSA = _schedule(180, 3.0e-4, 10.0, 3.0e-6)
    _C.MODEL.CLIP4VI.HSA.STEPS = [60, 100]
    return cfg
