"""Caption utilities: CLIP BPE tokenisation with word boundaries, MLM masking, colour lexicon.

Token ids follow CLIP's BPE vocabulary (49408 entries, ``<start_of_text>`` = 49406,
``<end_of_text>`` = 49407) plus one extra id, ``MASK_TOKEN_ID = 49408``, so text encoders that
accept masked captions need ``VOCAB_SIZE = 49409`` embeddings. The mask token is never parsed
from text: it is only inserted by id.

open_clip's ``SimpleTokenizer(additional_special_tokens=["<|mask|>"])`` would give the same
id, but it pastes the token names into its word regex unescaped, so the ``|`` characters turn
``<`` and ``>`` into words of their own and change how ordinary captions split. The plain
tokenizer is therefore used and the mask id is handled here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import regex
import torch

__all__ = [
    "ATTRIBUTE_STOP_WORDS",
    "COLOR_WORDS",
    "CONTEXT_LENGTH",
    "EOT_TOKEN_ID",
    "MASK_TOKEN",
    "MASK_TOKEN_ID",
    "SOT_TOKEN_ID",
    "VOCAB_SIZE",
    "CaptionTokenizer",
    "attribute_word_mask",
    "color_word_mask",
    "encode_words",
    "get_tokenizer",
    "mask_color_words",
    "mlm_mask",
    "remove_color_words",
    "tokenize",
    "tokenize_batch",
]

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
MASK_TOKEN_ID = 49408
MASK_TOKEN = "<|mask|>"
VOCAB_SIZE = 49409
CONTEXT_LENGTH = 77
# Random replacements in MLM are drawn from real BPE tokens: ids 1..49405 (0 doubles as padding).
_RANDOM_TOKEN_LOW = 1
_RANDOM_TOKEN_HIGH = 49405

COLOR_WORDS = frozenset(
    {
        "black",
        "white",
        "grey",
        "gray",
        "red",
        "blue",
        "green",
        "yellow",
        "orange",
        "pink",
        "purple",
        "brown",
        "beige",
        "khaki",
        "navy",
        "tan",
        "gold",
        "golden",
        "silver",
        "maroon",
        "violet",
        "cyan",
        "teal",
        "olive",
        "cream",
        "burgundy",
        "crimson",
        "turquoise",
        "magenta",
        "lavender",
        "blond",
        "blonde",
        "colorful",
        "colourful",
        "multicolored",
        "multicoloured",
        "reddish",
        "bluish",
        "blueish",
        "greyish",
        "grayish",
        "blackish",
        "whitish",
        "pinkish",
        "purplish",
        "brownish",
        "yellowish",
        "greenish",
        "orangish",
        "orangey",
    }
)

ATTRIBUTE_STOP_WORDS = frozenset(
    {
        # articles and determiners
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "each",
        "every",
        "another",
        "other",
        "both",
        "all",
        # pronouns and possessives
        "he",
        "she",
        "it",
        "they",
        "him",
        "her",
        "them",
        "his",
        "hers",
        "its",
        "their",
        "theirs",
        "i",
        "me",
        "my",
        "we",
        "us",
        "our",
        "you",
        "your",
        "who",
        "whom",
        "whose",
        "which",
        "what",
        "himself",
        "herself",
        "themselves",
        "s",
        "t",
        "re",
        "ve",
        "m",
        "ll",
        "d",
        # prepositions
        "in",
        "on",
        "at",
        "of",
        "with",
        "without",
        "to",
        "from",
        "for",
        "by",
        "over",
        "under",
        "above",
        "below",
        "into",
        "onto",
        "around",
        "across",
        "along",
        "behind",
        "beside",
        "near",
        "through",
        "up",
        "down",
        "off",
        "out",
        "about",
        "as",
        "like",
        # conjunctions
        "and",
        "or",
        "but",
        "nor",
        "so",
        "while",
        "also",
        "then",
        "than",
        "too",
        "very",
        # auxiliaries and light verbs of the captions
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "has",
        "have",
        "had",
        "having",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "may",
        "might",
        "seems",
        "appears",
        "wears",
        "wear",
        "wearing",
        "wore",
        "worn",
        "dressed",
        "carries",
        "carrying",
        "carry",
        "holds",
        "holding",
        "there",
        "here",
        "not",
        "no",
    }
)

# Words removed together with an adjacent colour word by remove_color_words.
_SHADE_MODIFIERS = frozenset(
    {"light", "dark", "pale", "bright", "deep", "pastel", "neon", "dusty", "medium"}
)
_COLOR_SUFFIXES = frozenset({"colored", "coloured", "color", "colour", "toned", "tone", "hued"})
_COLOR_CONNECTORS = frozenset({"and", "or"})
_DANGLING_PREPOSITIONS = frozenset({"in", "of"})
_CLAUSE_WORDS = frozenset({"and", "or", "with", "while", "but"})
_ARTICLES = frozenset({"a", "an"})


def _base_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    if tok.sot_token_id != SOT_TOKEN_ID or tok.eot_token_id != EOT_TOKEN_ID:
        raise RuntimeError(
            f"unexpected CLIP special ids {tok.sot_token_id}, {tok.eot_token_id}; "
            f"expected {SOT_TOKEN_ID}, {EOT_TOKEN_ID}"
        )
    if tok.vocab_size != MASK_TOKEN_ID:
        raise RuntimeError(f"unexpected CLIP vocabulary size {tok.vocab_size}")
    return tok


class CaptionTokenizer:
    """CLIP BPE tokenizer that also reports which word each token came from.

    A word is one match of CLIP's pre-tokenisation regex on the cleaned, lower-cased caption
    (so ``t-shirt`` is three words: ``t``, ``-``, ``shirt``; punctuation marks are words too).
    """

    def __init__(self):
        self._tok = _base_tokenizer()

    @property
    def simple_tokenizer(self):
        """The wrapped ``open_clip.tokenizer.SimpleTokenizer``."""
        return self._tok

    def split_words(self, text: str) -> list[str]:
        """Words of a caption as CLIP pre-tokenises them (cleaned, lower-cased)."""
        return regex.findall(self._tok.pat, self._tok.clean_fn(text))

    def encode_bpe(self, text: str) -> tuple[list[int], list[int]]:
        """BPE ids of a caption without special tokens, and the word index of every id.

        Returns:
            ids (list[int]): (N,) BPE ids, equal to ``SimpleTokenizer.encode(text)``.
            word_ids (list[int]): (N,) index of the word each id belongs to, from 0.
        """
        tok = self._tok
        ids: list[int] = []
        word_ids: list[int] = []
        for w, word in enumerate(self.split_words(text)):
            word = "".join(tok.byte_encoder[b] for b in word.encode("utf-8"))
            pieces = [tok.encoder[p] for p in tok.bpe(word).split(" ")]
            ids.extend(pieces)
            word_ids.extend([w] * len(pieces))
        return ids, word_ids

    def encode_words(
        self, text: str, context_length: int | None = CONTEXT_LENGTH
    ) -> tuple[list[int], list[int]]:
        """SOT + BPE + EOT ids of a caption with word indices, padded/truncated to a length.

        Args:
            text (str): the caption.
            context_length (int or None): output length L; ``None`` keeps the natural length
                (no padding, no truncation).

        Returns:
            ids (list[int]): (L,) token ids; padding is 0; when truncated, EOT stays last.
            word_ids (list[int]): (L,) word index of each token; -1 at SOT, EOT and padding.
        """
        bpe, words = self.encode_bpe(text)
        ids = [SOT_TOKEN_ID, *bpe, EOT_TOKEN_ID]
        word_ids = [-1, *words, -1]
        if context_length is None:
            return ids, word_ids
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2, got {context_length}")
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [EOT_TOKEN_ID]
            word_ids = word_ids[: context_length - 1] + [-1]
        pad = context_length - len(ids)
        return ids + [0] * pad, word_ids + [-1] * pad

    def tokenize(self, text: str, context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """Token ids of one caption.

        Args:
            text (str): the caption.
            context_length (int): output length L.

        Returns:
            LongTensor: (L,) SOT + BPE + EOT, padded with 0, EOT kept last when truncated.
        """
        ids, _ = self.encode_words(text, context_length)
        return torch.tensor(ids, dtype=torch.long)

    def tokenize_with_words(
        self, text: str, context_length: int = CONTEXT_LENGTH
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and word indices of one caption as tensors.

        Returns:
            ids (LongTensor): (L,) as ``tokenize``.
            word_ids (LongTensor): (L,) word index per token, -1 at SOT, EOT and padding.
        """
        ids, word_ids = self.encode_words(text, context_length)
        return torch.tensor(ids, dtype=torch.long), torch.tensor(word_ids, dtype=torch.long)

    def tokenize_batch(
        self, texts: Sequence[str], context_length: int = CONTEXT_LENGTH
    ) -> torch.Tensor:
        """Token ids of several captions.

        Args:
            texts (Sequence[str]): N captions.
            context_length (int): output length L.

        Returns:
            LongTensor: (N, L), each row as ``tokenize``.
        """
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            out[i] = self.tokenize(text, context_length)
        return out

    def token_string(self, token_id: int) -> str:
        """Text of one token id (BPE piece with the end-of-word marker removed)."""
        token_id = int(token_id)
        if token_id == MASK_TOKEN_ID:
            return MASK_TOKEN
        tok = self._tok
        piece = tok.decoder[token_id]
        if token_id in (SOT_TOKEN_ID, EOT_TOKEN_ID):
            return piece
        raw = bytearray(tok.byte_decoder[c] for c in piece)
        return raw.decode("utf-8", errors="replace").replace("</w>", "")

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Caption text of token ids, without SOT, EOT and anything after EOT; mask tokens are
        shown as ``<|mask|>``.

        Args:
            ids: (L,) token ids.
        """
        parts: list[str] = []
        run: list[int] = []
        for t in _as_list(ids):
            if t == EOT_TOKEN_ID:
                break
            if t == SOT_TOKEN_ID:
                continue
            if t == MASK_TOKEN_ID:
                parts.append(self._tok.decode(run))
                parts.append(MASK_TOKEN + " ")
                run = []
            else:
                run.append(t)
        parts.append(self._tok.decode(run))
        return " ".join("".join(parts).split())

    def word_strings(
        self, ids: Sequence[int] | torch.Tensor, word_ids: Sequence[int] | torch.Tensor
    ) -> dict[int, str]:
        """Text of every word present in a token sequence.

        Args:
            ids: (L,) token ids.
            word_ids: (L,) word index per token, -1 for tokens outside words.

        Returns:
            dict[int, str]: word index -> the word (lower-cased); a word containing a mask
            token maps to a string containing ``<|mask|>``.
        """
        words: dict[int, str] = {}
        for t, w in zip(_as_list(ids), _as_list(word_ids)):
            if w < 0:
                continue
            words[w] = words.get(w, "") + self.token_string(t)
        return words


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> CaptionTokenizer:
    """The shared ``CaptionTokenizer`` (built on first use)."""
    return CaptionTokenizer()


def tokenize(text: str, context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids of one caption: (L,) LongTensor, see ``CaptionTokenizer.tokenize``."""
    return get_tokenizer().tokenize(text, context_length)


def tokenize_batch(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids of N captions: (N, L) LongTensor, see ``CaptionTokenizer.tokenize``."""
    return get_tokenizer().tokenize_batch(texts, context_length)


def encode_words(
    text: str, context_length: int | None = CONTEXT_LENGTH
) -> tuple[list[int], list[int]]:
    """Token ids and word indices of one caption, see ``CaptionTokenizer.encode_words``."""
    return get_tokenizer().encode_words(text, context_length)


def _as_list(x) -> list[int]:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return [int(v) for v in x]


def _as_long_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype=torch.long, device="cpu").clone()
    return torch.as_tensor(np.asarray(x), dtype=torch.long).clone()


def _maskable_positions(ids: torch.Tensor) -> torch.Tensor:
    """(L,) bool: caption tokens, i.e. before the first EOT and not SOT/EOT/mask."""
    keep = (ids != SOT_TOKEN_ID) & (ids != EOT_TOKEN_ID) & (ids != MASK_TOKEN_ID)
    eot = (ids == EOT_TOKEN_ID).nonzero()
    if len(eot):
        keep[int(eot[0]) :] = False
    return keep


def _word_flag_mask(ids, word_ids, predicate) -> torch.Tensor:
    ids_t = _as_long_tensor(ids)
    wid = _as_list(word_ids)
    if len(wid) != len(ids_t):
        raise ValueError(f"ids and word_ids differ in length: {len(ids_t)} vs {len(wid)}")
    words = get_tokenizer().word_strings(ids_t, wid)
    flagged = {w for w, s in words.items() if predicate(s)}
    mask = torch.tensor([w in flagged for w in wid], dtype=torch.bool)
    return mask & _maskable_positions(ids_t)


def color_word_mask(ids, word_ids) -> torch.Tensor:
    """Token positions that belong to colour words (``COLOR_WORDS``).

    Args:
        ids: (L,) token ids (tensor, array or list).
        word_ids: (L,) word index per token, -1 outside words (from ``encode_words``).

    Returns:
        BoolTensor: (L,) True on every token of every colour word.
    """
    return _word_flag_mask(ids, word_ids, lambda s: s in COLOR_WORDS)


def attribute_word_mask(ids, word_ids, exclude_colors: bool = False) -> torch.Tensor:
    """Token positions of attribute words: words with a letter that are not stop-words.

    Used to choose the words for random masking of a colour-free caption (MGANet's L3).

    Args:
        ids: (L,) token ids.
        word_ids: (L,) word index per token, -1 outside words.
        exclude_colors (bool): also leave out colour words.

    Returns:
        BoolTensor: (L,) True on every token of every attribute word.
    """

    def is_attribute(word: str) -> bool:
        if MASK_TOKEN in word or not any(c.isalpha() for c in word):
            return False
        if word in ATTRIBUTE_STOP_WORDS:
            return False
        return not (exclude_colors and word in COLOR_WORDS)

    return _word_flag_mask(ids, word_ids, is_attribute)


def mask_color_words(
    caption, word_ids=None, context_length: int = CONTEXT_LENGTH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every colour-word token by the mask token (MGANet's colour-dependent masking, L1).

    Args:
        caption (str or (L,) ids): a caption, or its token ids together with ``word_ids``.
        word_ids: (L,) word index per token; required when ``caption`` is ids.
        context_length (int): L when ``caption`` is text.

    Returns:
        masked_ids (LongTensor): (L,) ids with colour tokens set to ``MASK_TOKEN_ID``.
        labels (LongTensor): (L,) the original id at masked positions, 0 elsewhere.
    """
    if isinstance(caption, str):
        ids, word_ids = get_tokenizer().encode_words(caption, context_length)
    else:
        if word_ids is None:
            raise ValueError("word_ids is required when the caption is given as token ids")
        ids = caption
    ids_t = _as_long_tensor(ids)
    chosen = color_word_mask(ids_t, word_ids)
    labels = torch.where(chosen, ids_t, torch.zeros_like(ids_t))
    masked = ids_t.masked_fill(chosen, MASK_TOKEN_ID)
    return masked, labels


def mlm_mask(
    ids,
    rng,
    prob: float = 0.15,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
    positions_allowed=None,
    word_ids=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random masked-language-model corruption of caption tokens (BERT-style 80/10/10).

    Only caption tokens can be chosen: never SOT, EOT, padding (anything after the first EOT)
    or existing mask tokens. Each candidate is chosen with probability ``prob``; when none is
    chosen but candidates exist, one is chosen uniformly. Of the chosen tokens, a fraction
    ``mask_frac`` becomes ``MASK_TOKEN_ID``, ``random_frac`` a random BPE id in [1, 49405], and
    the rest keep their id.

    Args:
        ids: (L,) or (B, L) token ids (SOT ... EOT, padding).
        rng (numpy.random.Generator or int): source of randomness; an int seeds a new one.
        prob (float): chance of choosing each candidate token (or word, see ``word_ids``).
        mask_frac (float): share of chosen tokens replaced by the mask token.
        random_frac (float): share of chosen tokens replaced by a random token.
        positions_allowed: optional (L,) or (B, L) bool; restricts the candidates.
        word_ids: optional (L,) or (B, L) word index per token; when given, whole words are
            chosen (each with probability ``prob``) and all their candidate tokens masked.

    Returns:
        masked_ids (LongTensor): same shape as ``ids``.
        labels (LongTensor): same shape; the original id at chosen positions, 0 elsewhere
            (0 is the ignore index; the rare chosen token with id 0, ``!``, is thereby ignored).
    """
    rng = np.random.default_rng(rng)
    ids_t = _as_long_tensor(ids)
    if ids_t.dim() == 2:
        outs = [
            mlm_mask(
                ids_t[b],
                rng,
                prob,
                mask_frac,
                random_frac,
                None if positions_allowed is None else positions_allowed[b],
                None if word_ids is None else word_ids[b],
            )
            for b in range(ids_t.shape[0])
        ]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])
    if ids_t.dim() != 1:
        raise ValueError(f"ids must be (L,) or (B, L), got shape {tuple(ids_t.shape)}")
    if not 0.0 <= mask_frac + random_frac <= 1.0:
        raise ValueError("mask_frac + random_frac must lie in [0, 1]")

    candidates = _maskable_positions(ids_t).numpy()
    if positions_allowed is not None:
        allowed = np.asarray(_as_list(positions_allowed), dtype=bool)
        if allowed.shape != candidates.shape:
            raise ValueError("positions_allowed must have the shape of ids")
        candidates &= allowed
    cand_idx = np.flatnonzero(candidates)
    chosen = np.zeros_like(candidates)
    if len(cand_idx):
        if word_ids is None:
            pick = rng.random(len(cand_idx)) < prob
            if not pick.any():
                pick[rng.integers(len(cand_idx))] = True
            chosen[cand_idx[pick]] = True
        else:
            wid = np.asarray(_as_list(word_ids))
            if wid.shape != candidates.shape:
                raise ValueError("word_ids must have the shape of ids")
            words = np.unique(wid[cand_idx])
            pick = rng.random(len(words)) < prob
            if not pick.any():
                pick[rng.integers(len(words))] = True
            chosen = candidates & np.isin(wid, words[pick])

    chosen_idx = np.flatnonzero(chosen)
    u = rng.random(len(chosen_idx))
    random_ids = rng.integers(_RANDOM_TOKEN_LOW, _RANDOM_TOKEN_HIGH + 1, size=len(chosen_idx))
    to_mask = torch.as_tensor(chosen_idx[u < mask_frac], dtype=torch.long)
    to_random = (u >= mask_frac) & (u < mask_frac + random_frac)
    chosen_t = torch.as_tensor(chosen_idx, dtype=torch.long)
    masked = ids_t.clone()
    labels = torch.zeros_like(ids_t)
    labels[chosen_t] = ids_t[chosen_t]
    masked[to_mask] = MASK_TOKEN_ID
    masked[torch.as_tensor(chosen_idx[to_random], dtype=torch.long)] = torch.as_tensor(
        random_ids[to_random], dtype=torch.long
    )
    return masked, labels


# Letters (with inner hyphens) form word units; everything else is kept verbatim as gaps.
_UNIT_RE = regex.compile(r"\p{L}+(?:-\p{L}+)*")


def _is_color_part(part: str) -> bool:
    return part.lower() in COLOR_WORDS


def remove_color_words(text: str) -> str:
    """Colour-free version of a caption, for datasets that provide none (MGANet).

    Drops colour words (``COLOR_WORDS``) and what only describes them: shade modifiers
    directly before a colour (``dark blue``), ``colored``/``coloured`` after one, ``and``/``or``
    and commas/slashes between removed colours (``black and white shirt`` -> ``shirt``), and a
    dangling ``in``/``of`` before a removed colour that ends a clause (``a man in black, ...``
    -> ``a man, ...``). Hyphenated compounds lose their colour parts (``red-striped`` ->
    ``striped``). Then spaces, punctuation, ``a``/``an`` and sentence capitals are tidied.

    Args:
        text (str): the caption.

    Returns:
        str: the caption without colour words.
    """
    spans = [(m.start(), m.end()) for m in _UNIT_RE.finditer(text)]
    units = [text[s:e] for s, e in spans]
    # gaps[i] is the text before unit i; gaps[len(units)] the text after the last unit.
    bounds = [0] + [p for s, e in spans for p in (s, e)] + [len(text)]
    gaps = [text[bounds[2 * i] : bounds[2 * i + 1]] for i in range(len(units) + 1)]
    lower = [u.lower() for u in units]
    n = len(units)

    kept_text = list(units)
    removed = [False] * n
    for i, u in enumerate(units):
        parts = u.split("-")
        if not any(_is_color_part(p) for p in parts):
            continue
        rest = [
            p
            for p in parts
            if not _is_color_part(p)
            and p.lower() not in _SHADE_MODIFIERS
            and p.lower() not in _COLOR_SUFFIXES
            and p.lower() not in _COLOR_CONNECTORS
        ]
        if rest:
            kept_text[i] = "-".join(rest)
        else:
            removed[i] = True
    is_color = list(removed)

    def blank(gap: str) -> bool:
        return gap.strip() == ""

    def joins_list(gap: str) -> bool:
        return regex.fullmatch(r"[\s,/&+]*", gap) is not None

    for i in range(n - 1, -1, -1):
        # "dark blue", "very light grey" (only the shade word goes)
        if lower[i] in _SHADE_MODIFIERS and i + 1 < n and is_color[i + 1] and blank(gaps[i + 1]):
            removed[i] = True
            is_color[i] = True
    for i in range(n):
        # "black and white", "red, white or blue"
        if (
            lower[i] in _COLOR_CONNECTORS
            and 0 < i < n - 1
            and is_color[i - 1]
            and is_color[i + 1]
            and joins_list(gaps[i])
            and joins_list(gaps[i + 1])
        ):
            removed[i] = True
    for i in range(1, n):
        # "red colored", "red colour"
        if lower[i] in _COLOR_SUFFIXES and removed[i - 1] and blank(gaps[i]):
            removed[i] = True

    # Runs of removed units joined by list separators are dropped together with those separators.
    runs: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if not removed[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and removed[j + 1] and joins_list(gaps[j + 1]):
            j += 1
        runs.append((i, j))
        i = j + 1

    drop_gap = [False] * (n + 1)
    fix_article: set[int] = set()
    capitalise: set[int] = set()
    for i, j in runs:
        for k in range(i + 1, j + 1):
            drop_gap[k] = True
        after_gap = gaps[j + 1]
        ends_clause = (
            j + 1 == n
            or regex.search(r"[,.;:!?]", after_gap) is not None
            or (lower[j + 1] in _CLAUSE_WORDS and blank(after_gap))
        )
        if (
            ends_clause
            and i > 0
            and lower[i - 1] in _DANGLING_PREPOSITIONS
            and blank(gaps[i])
            and not removed[i - 1]
        ):
            removed[i - 1] = True
            drop_gap[i] = True
        start = i - 1 if i > 0 and removed[i - 1] else i
        if start > 0 and lower[start - 1] in _ARTICLES and blank(gaps[start]):
            fix_article.add(start - 1)
        sentence_start = start == 0 or regex.search(r"[.!?]\s*$", gaps[start]) is not None
        if sentence_start and units[start][:1].isupper():
            capitalise.add(start)

    out: list[str] = []
    pending_capital = False
    for k in range(n):
        if not drop_gap[k]:
            out.append(gaps[k])
        if removed[k]:
            if k in capitalise:
                pending_capital = True
            continue
        word = kept_text[k]
        if k in fix_article:
            nxt = next((kept_text[m] for m in range(k + 1, n) if not removed[m]), "")
            article = "an" if nxt[:1].lower() in "aeiou" and nxt else "a"
            word = article.capitalize() if word[:1].isupper() else article
        if pending_capital:
            word = word[:1].upper() + word[1:]
            pending_capital = False
        out.append(word)
    out.append(gaps[n])
    return _tidy("".join(out))


def _tidy(text: str) -> str:
    text = regex.sub(r"\s+", " ", text)
    text = regex.sub(r"\s+([,.;:!?])", r"\1", text)
    text = regex.sub(r",(?:\s*,)+", ",", text)
    text = regex.sub(r"[,;:]+\s*([.!?])", r"\1", text)
    text = regex.sub(r"([.!?])\s*[,;:]+", r"\1", text)
    text = regex.sub(r"\(\s*\)", "", text)
    text = regex.sub(r"^[\s,;:.!?]+", "", text)
    text = regex.sub(r"[\s,;:]+$", "", text)
    return regex.sub(r"\s+", " ", text).strip()
