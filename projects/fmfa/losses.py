"""FMFA's losses (Yin et al., Sec. 3.2-3.3): A-SDM and EFA. Pure functions; shapes in docstrings.

Notation: B pairs in a batch, row / item i of the image and of the text side form a pair;
L caption positions, N image patches (the class token excluded), D the joint width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plugins.modeling.losses import sdm_row_kl

__all__ = [
    "a_sdm_loss",
    "adaptive_weights",
    "efa_loss",
    "efa_losses",
    "efa_ranking_loss",
    "hard_similarity",
    "labelled_columns",
    "language_grouped_embeddings",
    "sparse_aggregation_weights",
    "token_patch_similarity",
    "weighted_sdm_loss",
]

WEIGHT_SOURCES = ("probability", "cosine")
LABELLED_COLUMNS = ("pair", "first_of_identity")
EFA_QUERY_SUMS = ("row", "column")


# ---------------------------------------------------------------------------------- A-SDM


def adaptive_weights(
    scores: torch.Tensor, alpha: float, columns: torch.Tensor | None = None
) -> torch.Tensor:
    """A-SDM's row weights ``alpha * (max_k scores_ik - scores_i,c(i)) + 1`` (Eq. 2).

    ``c(i)`` is row i's labelled column: its paired item, column i (Eq. 2), unless ``columns``
    says otherwise. A row whose labelled column already scores highest gets weight 1.
    Computed as given: callers decide about gradients.

    Args:
        scores (Tensor): (B, B) one direction's matching probabilities (Eq. 1) or cosines.
        alpha (float): the weight factor alpha.
        columns (Tensor): (B,) long, each row's labelled column; None: the diagonal.

    Returns:
        Tensor: (B,) weights, >= 1 for alpha >= 0.
    """
    if columns is None:
        labelled = scores.diagonal()
    else:
        labelled = scores.gather(1, columns[:, None])[:, 0]
    return alpha * (scores.max(dim=1).values - labelled) + 1.0


def labelled_columns(pids: torch.Tensor, rule: str = "pair") -> torch.Tensor:
    """Each row's labelled column for the A-SDM weights: "pair", column i (Eq. 2), or
    "first_of_identity", the first column with row i's identity (the authors' code,
    ``labels_distribute.argmax(dim=1)`` in ``model/objectives.py``). pids (Tensor): (B,)."""
    if rule not in LABELLED_COLUMNS:
        raise ValueError(f"labelled column rule {rule!r}; expected one of {LABELLED_COLUMNS}")
    if rule == "pair":
        return torch.arange(pids.shape[0], device=pids.device)
    return (pids[:, None] == pids[None, :]).int().argmax(dim=1)


def weighted_sdm_loss(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    pids: torch.Tensor,
    logit_scale: float | torch.Tensor,
    alpha: float,
    weight_from: str = "probability",
    weight_grad: bool = False,
    eps: float = 1e-8,
    labelled_column: str = "pair",
) -> torch.Tensor:
    """SDM with each row's KL weighted by ``adaptive_weights`` (Eq. 1-4 and its variants).

    The paper's form with its defaults is ``a_sdm_loss``; here every choice is the caller's.

    ``weight_from`` "probability" is Eq. 2 (from each direction's softmax p); "cosine" takes
    the cosine similarities instead (the authors' public code). ``weight_grad`` lets gradients
    flow through the weights (the authors' code); Eq. 2-3 use them as weights, without.

    Args:
        image_feats (Tensor): (B, D) image globals (normalised inside).
        text_feats (Tensor): (B, D) text globals (normalised inside); row i pairs with image i.
        pids (Tensor): (B,) identity labels.
        logit_scale (float or Tensor): 1 / tau_1 of Eq. 1.
        alpha (float): alpha of Eq. 2.
        weight_from (str): "probability" or "cosine".
        weight_grad (bool): keep the weights in the graph.
        eps (float): added to q inside the log (Eq. 3).
        labelled_column (str): see ``labelled_columns``; the same columns serve both
            directions (the identity matrix is symmetric).

    Returns:
        Tensor: () ``mean_i(w_i KL_i2t) + mean_i(w'_i KL_t2i)`` (Eq. 4).
    """
    if weight_from not in WEIGHT_SOURCES:
        raise ValueError(f"weight_from={weight_from!r}; expected one of {WEIGHT_SOURCES}")
    cos = F.normalize(image_feats, dim=1) @ F.normalize(text_feats, dim=1).t()
    logits = logit_scale * cos
    columns = None if labelled_column == "pair" else labelled_columns(pids, labelled_column)
    with torch.set_grad_enabled(weight_grad and torch.is_grad_enabled()):
        if weight_from == "probability":
            w_i2t = adaptive_weights(logits.softmax(dim=1), alpha, columns)
            w_t2i = adaptive_weights(logits.t().softmax(dim=1), alpha, columns)
        else:
            w_i2t = adaptive_weights(cos, alpha, columns)
            w_t2i = adaptive_weights(cos.t(), alpha, columns)
    kl_i2t, kl_t2i = sdm_row_kl(logits, pids, eps)
    return (w_i2t * kl_i2t).mean() + (w_t2i * kl_t2i).mean()


def a_sdm_loss(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    pids: torch.Tensor,
    logit_scale: float | torch.Tensor = 50.0,
    alpha: float = 10.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Adaptive similarity distribution matching (Eq. 1-4).

    As ``plugins.modeling.losses.sdm_loss``, but row i's KL is weighted by
    ``w_i = alpha * (max_k p_ik - p_ii) + 1`` (Eq. 2), computed without gradient from that
    direction's ``p = softmax(logit_scale * S)``; column i is row i's paired item. With
    ``alpha = 0`` it is SDM.

    Args:
        image_feats (Tensor): (B, D) image globals (normalised inside).
        text_feats (Tensor): (B, D) text globals (normalised inside); row i pairs with image i.
        pids (Tensor): (B,) identity labels.
        logit_scale (float or Tensor): 1 / tau_1 (Eq. 1).
        alpha (float): alpha of Eq. 2.
        eps (float): added to q inside the log (Eq. 3).

    Returns:
        Tensor: () ``mean_i(w_i KL_i2t) + mean_i(w'_i KL_t2i)``.
    """
    return weighted_sdm_loss(
        image_feats, text_feats, pids, logit_scale, alpha, "probability", False, eps
    )


# ------------------------------------------------------------------------------------ EFA


def token_patch_similarity(text_tokens: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
    """Inner products ``s_ij = f^t_i . f^v_j`` of each caption's tokens with its own image's
    patches (the input of Eq. 5).

    Args:
        text_tokens (Tensor): (B, L, D) last hidden states of the text side (projected).
        patch_tokens (Tensor): (B, N, D) patch tokens of the paired images (projected).

    Returns:
        Tensor: (B, L, N).
    """
    return text_tokens @ patch_tokens.transpose(1, 2)


def sparse_aggregation_weights(
    sim: torch.Tensor, sigma: float | None = None, eps: float = 1e-12
) -> torch.Tensor:
    """Aggregation weights of Eq. 5-7: min-max normalise each token's row over the patches,
    zero entries below ``sigma``, renormalise the row to sum 1.

    The row maximum normalises to 1 >= sigma, so every token keeps at least one patch (a
    constant row, where Eq. 5 is undefined, gets all-zero weights).

    Args:
        sim (Tensor): (..., L, N) token-patch similarities.
        sigma (float): threshold of Eq. 6; None: 1 / N.
        eps (float): floor of the denominators.

    Returns:
        Tensor: (..., L, N) ``agg``, each row summing to 1.
    """
    if sigma is None:
        sigma = 1.0 / sim.shape[-1]
    low = sim.amin(dim=-1, keepdim=True)
    high = sim.amax(dim=-1, keepdim=True)
    normed = (sim - low) / (high - low).clamp_min(eps)  # Eq. 5
    sparse = torch.where(normed >= sigma, normed, torch.zeros_like(normed))  # Eq. 6
    return sparse / sparse.sum(dim=-1, keepdim=True).clamp_min(eps)  # Eq. 7


def language_grouped_embeddings(agg: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
    """Joint embeddings ``e_i = sum_j agg_ij f^v_j`` (Eq. 8).

    Args:
        agg (Tensor): (B, L, N) aggregation weights (Eq. 7).
        patch_tokens (Tensor): (B, N, D) the patches they weight.

    Returns:
        Tensor: (B, L, D), one joint embedding per caption position.
    """
    return agg @ patch_tokens


def hard_similarity(
    queries: torch.Tensor,
    joint: torch.Tensor,
    joint_valid: torch.Tensor,
    query_valid: torch.Tensor | None = None,
    lam: float = 1.0,
    rescale: bool = True,
) -> torch.Tensor:
    """Hard-coding similarity (Eq. 9-10) of every query item with every pair's joint embeddings.

    ``H[b, c] = (1 / lam) * log sum_i exp(lam * max_j cos(q_bi, e_cj))`` over the valid
    positions i of query item b and j of joint item c. The queries are a caption's tokens
    (``hard_s(T, E)``) or an image's patches (the image side, "similarly" in Sec. 3.3).

    Args:
        queries (Tensor): (Bq, Q, D) token or patch features (normalised inside).
        joint (Tensor): (Be, L, D) joint embeddings (normalised inside).
        joint_valid (Tensor): (Be, L) bool, the positions taking part; each row needs one.
        query_valid (Tensor): (Bq, Q) bool, or None: every query position takes part.
        lam (float): lambda of the LSE pooling, > 0.
        rescale (bool): keep the ``1 / lam`` of Eq. 10.

    Returns:
        Tensor: (Bq, Be).
    """
    bq, q_len, dim = queries.shape
    be, l_len, _ = joint.shape
    q = F.normalize(queries, dim=-1).reshape(bq * q_len, dim)
    e = F.normalize(joint, dim=-1).reshape(be * l_len, dim)
    # Memory: this (Bq, Q, Be, L) cosine tensor is the only one of its size alive at any time,
    # in the forward and in the backward pass (242 MB in fp32 for 64 images x 64 pairs x 192
    # patches x 77 positions). mm keeps only its inputs for backward and max(dim) only the
    # (Bq, Q, Be) indices, so autograd holds no copy; the mask is applied in place outside the
    # graph, which is exact because max never selects a masked entry (each row keeps one).
    cos = (q @ e.t()).view(bq, q_len, be, l_len)
    with torch.no_grad():
        cos.masked_fill_(~joint_valid.view(1, 1, be, l_len), float("-inf"))
    best = cos.max(dim=-1).values.permute(0, 2, 1)  # Eq. 9: (Bq, Be, Q)
    del cos
    if query_valid is not None:
        best = best.masked_fill(~query_valid[:, None, :], float("-inf"))
    pooled = torch.logsumexp(lam * best, dim=-1)  # Eq. 10
    return pooled / lam if rescale else pooled


def efa_ranking_loss(
    hard: torch.Tensor,
    margin: float,
    tau: float = 1.0,
    keep_positive: bool = False,
    query_sum: str = "row",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ranking loss of Eq. 11 in both directions.

    Row anchor b (query item b): ``log sum_{c != b} exp((H_bc - H_bb + margin) / tau)``; column
    anchor c (joint item c): ``log sum_{b != c} exp((H_bc - H_cc + margin) / tau)``; each
    averaged over its B anchors. ``keep_positive`` adds the positive's zero term to each sum,
    ``log(1 + sum_neg ...)`` (the authors' code). ``query_sum`` "column" reproduces the
    authors' code (``cost_im`` of ``compute_infonce_loss_cosine``), whose query-side term
    subtracts row b's positive but sums down column c: ``log sum_{b != c} exp((H_bc - H_bb +
    margin) / tau)``.

    Args:
        hard (Tensor): (B, B) hard similarities; the diagonal holds the matched pairs.
        margin (float): margin of Eq. 11.
        tau (float): tau_2 of Eq. 11.
        keep_positive (bool): see above.
        query_sum (str): "row" (Eq. 11) or "column" (the authors' code).

    Returns:
        tuple: () query-to-joint and () joint-to-query losses (L_t2e, L_e2t or L_i2e, L_e2i).
    """
    b = hard.shape[0]
    if b < 2 and not keep_positive:  # no negatives: the sums are empty
        zero = hard.sum() * 0.0
        return zero, zero
    pos = hard.diagonal()
    eye = torch.eye(b, dtype=torch.bool, device=hard.device)
    fill = 0.0 if keep_positive else float("-inf")
    if query_sum not in EFA_QUERY_SUMS:
        raise ValueError(f"query_sum {query_sum!r}; expected one of {EFA_QUERY_SUMS}")
    rows = ((hard - pos[:, None] + margin) / tau).masked_fill(eye, fill)
    cols = ((hard - pos[None, :] + margin) / tau).masked_fill(eye, fill)
    query_term = torch.logsumexp(rows, dim=1 if query_sum == "row" else 0).mean()
    return query_term, torch.logsumexp(cols, dim=0).mean()


def efa_losses(
    text_tokens: torch.Tensor,
    text_valid: torch.Tensor,
    patch_tokens: torch.Tensor,
    margin_t2e: float = 0.1,
    margin_i2e: float = 0.1,
    tau: float = 1.0,
    lam: float = 1.0,
    sigma_scale: float = 1.0,
    lse_rescale: bool = True,
    normalize_hard_sim: bool = False,
    keep_positive: bool = False,
    query_sum: str = "row",
) -> dict[str, torch.Tensor]:
    """The four terms of the explicit fine-grained alignment loss (Eq. 5-12).

    Each caption's tokens group its own image's patches into joint embeddings (Eq. 5-8,
    sigma = sigma_scale / N); hard-coding similarities of every caption and every image with
    every pair's joint embeddings (Eq. 9-10) feed the ranking loss (Eq. 11) both ways.
    Positions where ``text_valid`` is False take no part anywhere: neither as query tokens
    nor as joint embeddings.

    Args:
        text_tokens (Tensor): (B, L, D) caption token features.
        text_valid (Tensor): (B, L) bool, the caption positions taking part.
        patch_tokens (Tensor): (B, N, D) patch features of the paired images (no class token).
        margin_t2e (float): Eq. 11's margin between texts and joint embeddings (Table 1).
        margin_i2e (float): Eq. 11's margin between images and joint embeddings (Table 1).
        tau (float): tau_2 of Eq. 11.
        lam (float): lambda of Eq. 10.
        sigma_scale (float): sigma of Eq. 6 in units of 1 / N.
        lse_rescale (bool): keep Eq. 10's 1 / lambda.
        normalize_hard_sim (bool): L2-normalise each row of Hard_S before Eq. 11 (authors' code).
        keep_positive (bool): see ``efa_ranking_loss``.
        query_sum (str): see ``efa_ranking_loss``.

    Returns:
        dict: () tensors ``t2e``, ``e2t``, ``i2e``, ``e2i``; their sum is L_efa (Eq. 12).
    """
    # Checked on the device: a host-side check would stall a CUDA step until it gets here.
    torch._assert_async(
        text_valid.any(dim=1).all(), "every caption needs at least one position taking part in EFA"
    )
    num_patches = patch_tokens.shape[1]
    sim = token_patch_similarity(text_tokens, patch_tokens)
    agg = sparse_aggregation_weights(sim, sigma_scale / num_patches)
    joint = language_grouped_embeddings(agg, patch_tokens)
    hard_t = hard_similarity(text_tokens, joint, text_valid, text_valid, lam, lse_rescale)
    hard_v = hard_similarity(patch_tokens, joint, text_valid, None, lam, lse_rescale)
    if normalize_hard_sim:
        hard_t = F.normalize(hard_t, dim=1)
        hard_v = F.normalize(hard_v, dim=1)
    t2e, e2t = efa_ranking_loss(hard_t, margin_t2e, tau, keep_positive, query_sum)
    i2e, e2i = efa_ranking_loss(hard_v, margin_i2e, tau, keep_positive, query_sum)
    return {"t2e": t2e, "e2t": e2t, "i2e": i2e, "e2i": e2i}


def efa_loss(*args, **kwargs) -> torch.Tensor:
    """L_efa = L_t2e + L_e2t + L_i2e + L_e2i (Eq. 12); arguments as ``efa_losses``."""
    terms = efa_losses(*args, **kwargs)
    return terms["t2e"] + terms["e2t"] + terms["i2e"] + terms["e2i"]
