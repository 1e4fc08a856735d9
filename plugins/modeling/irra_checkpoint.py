"""Checkpoints of IRRA's and FMFA's own code (anosorae/IRRA, yinhao1102/FMFA), in both directions.

Their ``Checkpointer`` writes ``{"model": state_dict, "optimizer": ..., "scheduler": ..., ...}``
where the model's entries are ``base_model.*`` (CLIP in OpenAI's naming, without
``logit_scale``), ``classifier.*``, ``cross_attn.*``, ``cross_modal_transformer.resblocks.*``,
``ln_pre_t``, ``ln_pre_i``, ``ln_post`` and ``mlm_head.*``, in the fp16 / fp32 mix IRRA's
``convert_weights`` leaves. FMFA's model has the same entries. Such a file is recognised by its
keys, renamed to this project's modules and read as fp32; a key this module does not know is an
error that lists it.

Vocabulary. IRRA's tokenizer removes the last BPE vocabulary entry (``jekyll</w>``, id 49405) and
puts ``<|mask|>`` in its place, in a 49,408-row table; this project keeps every entry and appends
``<|mask|>`` at 49408 (49,409 rows). Every other id is the same in both, and IRRA's tokenizer
cannot encode ``jekyll`` at all. So IRRA's row 49405 becomes row 49408 here, and row 49405
(``jekyll</w>``, which no IRRA model has seen) gets the mean token embedding (the rule for rows
a checkpoint lacks) and, in the MLM head, a zero weight and a bias of -1e4: the head never
predicts it and its softmax over the other 49,408 classes is IRRA's. Back in IRRA's layout
(``to_irra_state_dict``) row 49408 returns to 49405 and row 49405 is dropped.

A checkpoint of this layout always describes a CLIP with QuickGELU (IRRA's ``clip_model.py``
uses it in every block).
"""

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "IRRA_MASK_ID",
    "IRRA_META_ARCHITECTURES",
    "IRRACheckpointError",
    "from_irra_state_dict",
    "from_irra_token_ids",
    "is_irra_checkpoint",
    "to_irra_state_dict",
]

IRRA_MASK_ID = 49405  # <|mask|> in IRRA's vocabulary; this project's is 49408
IRRA_VOCAB_SIZE = 49408
PLUGIN_MASK_ID = 49408
# The meta-architectures whose modules IRRA's entries map to.
IRRA_META_ARCHITECTURES = ("CLIPRetrieval", "IRRA", "FMFA")
# IRRA's prefix -> this project's, first match wins (base_model.visual.ln_post before ln_post).
RENAMES = (
    ("base_model.visual.", "image_encoder.visual."),
    ("base_model.token_embedding.", "text_encoder.token_embedding."),
    ("base_model.positional_embedding", "text_encoder.positional_embedding"),
    ("base_model.transformer.", "text_encoder.transformer."),
    ("base_model.ln_final.", "text_encoder.ln_final."),
    ("base_model.text_projection", "text_encoder.text_projection"),
    ("classifier.", "classifier."),
    ("cross_attn.", "irr.cross.cross_attn."),
    ("cross_modal_transformer.resblocks.", "irr.cross.blocks."),
    ("ln_pre_t.", "irr.cross.ln_pre_text."),
    ("ln_pre_i.", "irr.cross.ln_pre_image."),
    ("ln_post.", "irr.cross.ln_post."),
    ("mlm_head.", "irr.mlm."),
)
# Entries indexed by token id, under both names: the token embedding and the MLM head's output.
VOCAB_KEYS = (
    "text_encoder.token_embedding.weight",
    "irr.mlm.fc.weight",
    "irr.mlm.fc.bias",
    "base_model.token_embedding.weight",
    "mlm_head.fc.weight",
    "mlm_head.fc.bias",
)
# The parts only training uses, and the models that have them.
TRAINING_PARTS = ("irr.", "classifier.")
# Bias of the MLM head's output for the one id IRRA's vocabulary lacks: exp(-1e4) is 0 in fp32.
UNSEEN_TOKEN_BIAS = -1e4


class IRRACheckpointError(ValueError):
    """An IRRA-layout checkpoint that cannot be converted (unknown keys, another vocabulary)."""


def is_irra_checkpoint(checkpoint) -> bool:
    """Whether a loaded checkpoint is in IRRA's (or FMFA's) layout: a ``model`` state dict whose
    CLIP entries are under ``base_model.``."""
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    return isinstance(model, dict) and any(
        isinstance(k, str) and k.startswith("base_model.") for k in model
    )


def _convert(state_dict, renames, vocab_rows):
    """Rename by the first matching prefix of ``renames``, read as fp32, reorder vocabulary rows.

    Returns:
        (dict, list): the converted entries and the keys no prefix matches.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        name = next((new + key[len(old) :] for old, new in renames if key.startswith(old)), None)
        if name is None or not torch.is_tensor(value):
            unknown.append(key)
            continue
        value = value.float() if value.is_floating_point() else value
        vocab = key in VOCAB_KEYS or name in VOCAB_KEYS
        converted[name] = vocab_rows(value, key) if vocab else value
    return converted, unknown


def _listed(keys, limit=12):
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def _plugin_vocab_rows(tensor, key):
    """(49408, ...) in IRRA's id order -> (49409, ...) in this project's."""
    if tensor.shape[0] != IRRA_VOCAB_SIZE:
        raise IRRACheckpointError(
            f"{key} has {tensor.shape[0]} vocabulary rows, IRRA's tokenizer {IRRA_VOCAB_SIZE}: "
            "this is not a checkpoint of IRRA's or FMFA's code with its own tokenizer"
        )
    if key.endswith("token_embedding.weight"):
        unseen = tensor.mean(dim=0, keepdim=True)
    elif key.endswith("fc.bias"):
        unseen = torch.full_like(tensor[:1], UNSEEN_TOKEN_BIAS)
    else:
        unseen = torch.zeros_like(tensor[:1])
    return torch.cat(
        [
            tensor[:IRRA_MASK_ID],
            unseen,
            tensor[IRRA_MASK_ID + 1 :],
            tensor[IRRA_MASK_ID : IRRA_MASK_ID + 1],
        ]
    )


def _irra_vocab_rows(tensor, key):
    """(49409, ...) in this project's id order -> (49408, ...) in IRRA's."""
    if tensor.shape[0] != PLUGIN_MASK_ID + 1:
        raise IRRACheckpointError(
            f"{key} has {tensor.shape[0]} vocabulary rows; IRRA's layout needs this project's "
            f"{PLUGIN_MASK_ID + 1} (MODEL.CLIP.VOCAB_SIZE 49409)"
        )
    return torch.cat(
        [tensor[:IRRA_MASK_ID], tensor[PLUGIN_MASK_ID:], tensor[IRRA_MASK_ID + 1 : PLUGIN_MASK_ID]]
    )


def from_irra_state_dict(state_dict, model_keys=None, model_name="IRRA"):
    """IRRA's / FMFA's model entries under this project's names, in fp32.

    Args:
        state_dict (dict): the ``model`` entry of their checkpoint.
        model_keys: the state-dict keys of the model it is for; entries of training-only parts
            the model does not have (the IRR branch and classifier under ``CLIPRetrieval`` or
            an evaluation model) are dropped and logged. None keeps every entry.
        model_name (str): the model's meta-architecture, for messages.
    Returns:
        dict: the converted state dict.
    """
    converted, unknown = _convert(state_dict, RENAMES, _plugin_vocab_rows)
    if unknown:
        raise IRRACheckpointError(
            f"{len(unknown)} entries of the IRRA-layout checkpoint are not known to the converter "
            f"({_listed(unknown)}): it was written by a modified IRRA / FMFA model; convert those "
            "entries yourself or remove them"
        )
    if model_keys is not None:
        model_keys = set(model_keys)
        dropped = sorted(
            k for k in converted if k.startswith(TRAINING_PARTS) and k not in model_keys
        )
        for key in dropped:
            del converted[key]
        if dropped:
            parts = sorted({k.split(".")[0] for k in dropped})
            logger.info(
                "IRRA-layout checkpoint: %d entries of %s are not used by this %s model and are "
                "not loaded",
                len(dropped),
                " and ".join(parts),
                model_name,
            )
    return converted


def from_irra_token_ids(token_ids):
    """Token ids of IRRA's tokenizer in this project's vocabulary (its ``<|mask|>`` 49405 ->
    49408; every other id IRRA can produce is the same). token_ids (Tensor): any shape."""
    return torch.where(token_ids == IRRA_MASK_ID, PLUGIN_MASK_ID, token_ids)


def to_irra_state_dict(state_dict):
    """This project's IRRA / FMFA / CLIPRetrieval entries under IRRA's names (fp32)."""
    converted, unknown = _convert(
        state_dict, [(new, old) for old, new in RENAMES], _irra_vocab_rows
    )
    if unknown:
        raise IRRACheckpointError(
            f"{len(unknown)} entries have no counterpart in IRRA's model ({_listed(unknown)}): "
            f"only {', '.join(IRRA_META_ARCHITECTURES)} models convert to IRRA's layout"
        )
    return converted
