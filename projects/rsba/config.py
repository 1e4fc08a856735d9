"""Config keys of RSBA (``MODEL.RSBA``)."""

from fastreid.config import CfgNode as CN


def add_rsba_config(cfg):
    """Add ``cfg.MODEL.RSBA`` in place. Idempotent."""
    if hasattr(cfg.MODEL, "RSBA"):
        return cfg
    _C = cfg
    _C.MODEL.RSBA = CN()
    # Table 4's switches. Row 0 (all False) is the baseline: L_id + L_mse (Eq. 1-4).
    _C.MODEL.RSBA.ESFA = True  # L_con (Eq. 5-7; Eq. 11-13 with CVSC)
    _C.MODEL.RSBA.CSIA = True  # L_sc (Eq. 8; Eq. 14 with CVSC)
    _C.MODEL.RSBA.CVSC = True  # fuse a same-identity caption of another view (Eq. 9-10)
    # Cross-view captions fused per caption (Table 5: 1 is best; 2, 3 are its other rows).
    # With one, Eq. 9's softmax runs over a single key, so its weight is exactly 1.
    _C.MODEL.RSBA.NUM_VIEWS = 1
    _C.MODEL.RSBA.LAMBDA1 = 0.25  # lambda_1 in Eq. 15 (L_con)
    _C.MODEL.RSBA.LAMBDA2 = 0.2  # lambda_2 in Eq. 15 (L_sc)
    _C.MODEL.RSBA.MSE_WEIGHT = 1.0  # weight of L_mse in Eq. 15 (a plain sum)
    # Temperature of L_con: logits cos / TAU. Sec. 3.2 defines s(.,.) as the cosine itself,
    # so 1.0 (no temperature).
    _C.MODEL.RSBA.TAU = 1.0
    # Sec. 4.2: lr 3e-4 for the visual encoder (SOLVER.BASE_LR, also the classifier's) and 1e-6
    # for the text encoder and the fusion module (as factors of SOLVER.BASE_LR in training).
    _C.MODEL.RSBA.TEXT_LR = 1.0e-6
    _C.MODEL.RSBA.FUSION_LR = 1.0e-6
    return cfg
