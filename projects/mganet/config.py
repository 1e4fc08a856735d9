"""Config keys of MGANet (``MODEL.MGANET``)."""

from fastreid.config import CfgNode as CN


def add_mganet_config(cfg):
    """Add ``cfg.MODEL.MGANET`` in place. Idempotent.

    L_SDM (Eq. 1-3) is MGANet's base term and is configured where the shared baseline reads it:
    ``MODEL.RETRIEVAL.LOGIT_SCALE`` = 1 / tau_1 and ``MODEL.RETRIEVAL.SDM_WEIGHT``. Which images
    the loaders read is decided by ``MODEL.RETRIEVAL.FUSION`` (anything but "rgb" loads the
    thermal image); MGANet needs both, its own fusion is ``MODEL.MGANET.FUSION``.
    """
    if hasattr(cfg.MODEL, "MGANET"):
        return cfg
    _C = cfg
    _C.MODEL.MGANET = CN()
    # Multilevel cross-modal global alignment (MGA, Sec. 3.3): L_MGA = L_MAB + L_SDM (Eq. 7).
    # L_SDM is the baseline's term and always on; this switch adds L_MAB (Table 4, "+ MGA").
    _C.MODEL.MGANET.MGA = True
    # Multilevel cross-modal local alignment (MLA, Sec. 3.4): L_FRT + L_VRT + L_TRT (Eq. 14)
    # (Table 4, "+ MLA").
    _C.MODEL.MGANET.MLA = True
    # How F is formed from V and T (Sec. 3.5, Table 5): "atf" (adaptive token fusion),
    # "add" (V + T) or "cat" (Linear([V; T])).
    _C.MODEL.MGANET.FUSION = "atf"

    # tau_2 in Eq. 4/5 (the paper leaves it open; CLIP's initial temperature).
    _C.MODEL.MGANET.TAU2 = 0.07
    # Weight of L_MAB (Eq. 6) in the total loss; Eq. 7 adds it with weight 1.
    _C.MODEL.MGANET.MAB_WEIGHT = 1.0
    # Weights of L_FRT (Eq. 9), L_VRT (Eq. 12), L_TRT (Eq. 13); Eq. 14 sums them with weight 1.
    # A weight of 0 removes that branch (and its layers).
    _C.MODEL.MGANET.FRT_WEIGHT = 1.0
    _C.MODEL.MGANET.VRT_WEIGHT = 1.0
    _C.MODEL.MGANET.TRT_WEIGHT = 1.0

    # Self-attention blocks (MSA) after the cross-attention (MCA) in Eq. 8/10/11. The paper
    # gives no depth; IRRA's cross-modal encoder, which Eq. 8 describes, has 4.
    _C.MODEL.MGANET.CMT_DEPTH = 4
    # Attention heads of MCA / MSA; 0: token width // 64 (8 for ViT-B/16's 512-d tokens).
    _C.MODEL.MGANET.CMT_HEADS = 0
    # One MCA + MSA stack for FRT, VRT and TRT (Eq. 8, 10, 11 use the same notation but the
    # paper does not say whether the weights are shared); False: one stack per branch.
    _C.MODEL.MGANET.SHARE_CMT = False

    # Width of ATF's linear layers (Sec. 3.5, Fig. 3; not given); 0: the token width D.
    _C.MODEL.MGANET.ATF_HIDDEN = 0
    # Dropout after each of ATF's projection layers (Sec. 3.5 names dropout, not its rate).
    _C.MODEL.MGANET.ATF_DROPOUT = 0.1
    return cfg
