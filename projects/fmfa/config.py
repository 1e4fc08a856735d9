"""Config keys of FMFA (``MODEL.FMFA``)."""

from fastreid.config import CfgNode as CN


def add_fmfa_config(cfg):
    """Add ``cfg.MODEL.FMFA`` in place. Idempotent.

    FMFA's objective (Eq. 13) is L_id + L_irr + L_efa + L_A-sdm. The two terms it inherits from
    IRRA keep their shared keys: L_id is ``MODEL.RETRIEVAL.ID_WEIGHT``, L_irr ``MODEL.IRR.WEIGHT``
    (0 switches either off). The global term's weight (Table 6, L_A-sdm) is
    ``MODEL.RETRIEVAL.SDM_WEIGHT`` and tau_1 of Eq. 1 is 1 / ``MODEL.RETRIEVAL.LOGIT_SCALE``.
    The caption A-SDM, L_id and EFA see (masked, as the authors' code, or unmasked, as the
    text) is IRRA's ``MODEL.IRR.GLOBAL_CAPTION``.
    """
    if hasattr(cfg.MODEL, "FMFA"):
        return cfg
    _C = cfg
    _C.MODEL.FMFA = CN()

    # ---- A-SDM (Sec. 3.2, Eq. 1-4)
    # True: the global term is A-SDM (Eq. 3-4); False: IRRA's SDM (Table 5 rows 0 and 2).
    _C.MODEL.FMFA.A_SDM = True
    # alpha in Eq. 2 (paper: 10, 1 on RSTPReid). 0 gives every row weight 1, i.e. plain SDM.
    _C.MODEL.FMFA.ALPHA = 10.0
    # What w_i of Eq. 2 is computed from: "probability" (Eq. 2: alpha * (max_k p_ik - p_ii) + 1
    # with p of Eq. 1) or "cosine" (the authors' code: alpha * (max_k cos_ik - cos_ii) + 1).
    _C.MODEL.FMFA.ALPHA_FROM = "probability"
    # Let gradients flow through w_i (the authors' code does; Eq. 2-3 treat it as a weight).
    _C.MODEL.FMFA.WEIGHT_GRAD = False

    # ---- EFA (Sec. 3.3, Eq. 5-12)
    # True adds L_efa (Eq. 12) (Table 5 rows 2 and 3); training only, no parameters.
    _C.MODEL.FMFA.EFA = True
    # Weight of L_efa in Eq. 13 (paper: 1; Table 6 varies it).
    _C.MODEL.FMFA.EFA_WEIGHT = 1.0
    # margin of Eq. 11 for text <-> joint embeddings (Table 1 "T. to E.": 0.1 / 0.2 / 0.2 on
    # CUHK-PEDES / ICFG-PEDES / RSTPReid).
    _C.MODEL.FMFA.MARGIN_T2E = 0.1
    # margin of Eq. 11 for image <-> joint embeddings (Table 1 "V. to E.": 0.1 / 1.0 / 0.8).
    _C.MODEL.FMFA.MARGIN_I2E = 0.1
    # tau_2 in Eq. 11 (paper: 1.0).
    _C.MODEL.FMFA.TAU2 = 1.0
    # lambda of the LSE pooling in Eq. 10 (paper: 1.0; the authors' code divides by 0.1, i.e. 10).
    _C.MODEL.FMFA.LSE_LAMBDA = 1.0
    # Keep the 1 / lambda in front of the log of Eq. 10 (the authors' code drops it).
    _C.MODEL.FMFA.LSE_RESCALE = True
    # sigma of Eq. 6 is SIGMA_SCALE / N, N image patches (paper: 1 / N; Fig. 4b: 0.1 / N .. 20 / N).
    _C.MODEL.FMFA.SIGMA_SCALE = 1.0
    # Whether the caption's [SOS] and [EOS] tokens are among the text tokens f^t_i of Eq. 5-10
    # (the paper lists them in the token sequence and never drops them).
    _C.MODEL.FMFA.SPECIAL_TOKENS = True
    # Whether every one of the L caption positions takes part in Eq. 5-10, the padding after
    # [EOS] included (Sec. 4.1 sets L = 77 and Eq. 10 pools over the L positions; the authors'
    # code uses all 77). L is the text encoder's context length: a batch trimmed to its longest
    # caption is padded back. False: [SOS] .. [EOS] only; the sum of Eq. 10 then has as many
    # terms as the caption has tokens, so a longer caption scores higher (up to log of its
    # length), which lets caption length sway the ranking of Eq. 11.
    _C.MODEL.FMFA.PADDING_TOKENS = True
    # L2-normalise each row of Hard_S over the batch before Eq. 11 (the authors' code does).
    _C.MODEL.FMFA.NORMALIZE_HARD_SIM = False
    # Keep the positive pair's zero term inside the sum of Eq. 11, i.e. log(1 + sum_neg exp(.))
    # (the authors' code); False: the sum runs over negatives only, as Eq. 11 writes it.
    _C.MODEL.FMFA.KEEP_POSITIVE_TERM = False
    # Each row's labelled column in A-SDM's weight (Eq. 2): "pair", its own pair (column i), or
    # "first_of_identity", the batch's first column of its identity (the authors' code:
    # labels_distribute.argmax(dim=1), model/objectives.py). They differ for a row with an
    # earlier caption of its identity in the batch.
    _C.MODEL.FMFA.LABELLED_COLUMN = "pair"
    # How the query-anchored term of Eq. 11 sums: "row", along the anchor's row (Eq. 11), or
    # "column" (the authors' code: cost_im of compute_infonce_loss_cosine subtracts row b's
    # positive but sums over dim 0, down a column; its joint-anchored cost_s is Eq. 11's).
    _C.MODEL.FMFA.EFA_QUERY_SUM = "row"
    return cfg
