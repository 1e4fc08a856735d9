"""Config keys of CoRL (``MODEL.CORL``)."""

from fastreid.config import CfgNode as CN


def add_corl_config(cfg):
    """Add ``cfg.MODEL.CORL`` in place. Idempotent.

    The identity loss L_id is the shared one (``MODEL.RETRIEVAL.ID_WEIGHT``); the SDM of the
    baseline rows reads ``MODEL.RETRIEVAL.LOGIT_SCALE``. Stage 2 trains with the run's
    ``SOLVER`` settings; stage 1 overrides the few ``MODEL.CORL.VES`` names.
    """
    if hasattr(cfg.MODEL, "CORL"):
        return cfg
    _C = cfg
    _C.MODEL.CORL = CN()
    # Cross-modal matching loss: "ibm" (L_IBM, Eq. 9), "ibm_star" (Table 4's IBM*: Eq. 9
    # without its two weak-positive sums) or "sdm" (the baseline's SDM, Table 2 row 0#).
    _C.MODEL.CORL.MATCHING = "ibm"
    # Table 2 "VES": the virtual-text branch (stage 1 trains VES, stage 2 the Adapter with
    # L_align^s2, Eq. 5-6; inference adds sim(t, t_hat)). False: one stage, no branch.
    _C.MODEL.CORL.VES_BRANCH = True
    # Table 2 "CMC": the cross-modal relation consistency loss L_CRCL (Eq. 7); needs the branch.
    _C.MODEL.CORL.CMC = True

    # IBM (Eq. 8-9): alpha, beta bounds; tau_sp, tau_wp, tau_n temperatures (Sec. 4.1).
    _C.MODEL.CORL.ALPHA = 0.6  # alpha
    _C.MODEL.CORL.BETA = 0.4  # beta
    _C.MODEL.CORL.TAU_SP = 10.0  # tau_sp
    _C.MODEL.CORL.TAU_WP = 5.0  # tau_wp
    _C.MODEL.CORL.TAU_N = 40.0  # tau_n
    _C.MODEL.CORL.IBM_WEIGHT = 1.0  # weight of L_IBM in Eq. 10 (a plain sum)

    # VES (Sec. 3.2, Eq. 1-4).
    _C.MODEL.CORL.VES = CN()
    # Virtual-text tokens the FC layer makes from z_v (not given; 1 matches Table 5's 155.66M).
    _C.MODEL.CORL.VES.NUM_TOKENS = 1
    # Text around the virtual tokens ("{}" marks where they go) that E_t decodes; the global
    # feature is read at the closing EOT. Not given in the paper.
    _C.MODEL.CORL.VES.PROMPT = "a photo of a {} person."
    _C.MODEL.CORL.VES.TAU_A = 0.02  # tau_a in Eq. 4 (also used in Eq. 2, printed without one)
    # Table 3 switches: weights of L_nce^s1 (Eq. 2), L_mse^s1 (Eq. 3), L_cor^s1 (Eq. 4).
    _C.MODEL.CORL.VES.NCE_WEIGHT = 1.0
    _C.MODEL.CORL.VES.MSE_WEIGHT = 1.0
    _C.MODEL.CORL.VES.COR_WEIGHT = 1.0
    # Stage 1 schedule (Sec. 4.1): epochs, learning rate of the FC layer, warm-up epochs.
    _C.MODEL.CORL.VES.EPOCHS = 60
    _C.MODEL.CORL.VES.BASE_LR = 1.0e-4
    _C.MODEL.CORL.VES.WARMUP_EPOCHS = 5.0
    # Where the pre-extracted stage-1 features go; "" : OUTPUT_DIR/stage1/features.pth.
    _C.MODEL.CORL.VES.CACHE_FILE = ""

    # Cross-modal collaboration (stage 2, Eq. 5-7).
    # Adapter g(.): residual bottleneck MLP, z_hat + W2 relu(W1 z_hat); its hidden width
    # (not given; 128 matches Table 5's 155.66M with NUM_TOKENS 1).
    _C.MODEL.CORL.ADAPTER_DIM = 128
    _C.MODEL.CORL.LAMBDA1 = 0.1  # lambda_1 in Eq. 5
    _C.MODEL.CORL.ALIGN_TAU = 0.02  # temperature of L_nce^s2 (Eq. 5 prints none); tau_a's value
    _C.MODEL.CORL.ALIGN_WEIGHT = 1.0  # weight of L_align^s2 in Eq. 10 (a plain sum)
    # Temperature of the instance-to-prototype relations r^v, r^t in Eq. 7 (not given).
    _C.MODEL.CORL.CRCL_TAU = 0.02
    # Features the textual prototypes p_t of Eq. 7 are the identity means of: "real" (the
    # captions' text features t; Sec. 3.2 clusters "the image and text features") or "virtual"
    # (the virtual-text features t_hat). r^t relates t_hat to p_t either way.
    _C.MODEL.CORL.CRCL_TEXT = "real"
    # Encoders VES reads in stage 2 and at inference: "shared" (the fine-tuned image feature v,
    # decoded by the fine-tuned text encoder, without gradient; no extra parameters, as Table 5's
    # 155.66M) or "frozen" (copies of both CLIP encoders taken at the start of stage 2, never
    # trained: a second image pass, as Table 5's FLOPs suggest). projects/corl/README.md.
    _C.MODEL.CORL.VES_ENCODERS = "shared"
    _C.MODEL.CORL.CRCL_WEIGHT = 1.0  # weight of L_CRCL in Eq. 10 (a plain sum)
    # Stage-2 learning rates: the Adapter at 5e-5 = 5 x BASE_LR 1e-5 (Sec. 4.1).
    _C.MODEL.CORL.ADAPTER_LR_FACTOR = 5.0
    # Stage 2's linear warm-up in epochs (Sec. 4.1); replaces SOLVER.WARMUP_EPOCHS there
    # (SOLVER.WARMUP_ITERS with SOLVER.SCHED_UNIT iteration).
    _C.MODEL.CORL.WARMUP_EPOCHS = 5.0
    return cfg
