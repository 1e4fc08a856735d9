"""Caption tokenisation, word boundaries, MLM masking and the colour lexicon."""

import numpy as np
import open_clip
import pytest
import regex
import torch
from open_clip.tokenizer import SimpleTokenizer

from plugins.data.captions import (
    COLOR_WORDS,
    CONTEXT_LENGTH,
    EOT_TOKEN_ID,
    MASK_TOKEN_ID,
    SOT_TOKEN_ID,
    VOCAB_SIZE,
    attribute_word_mask,
    color_word_mask,
    encode_words,
    get_tokenizer,
    mask_color_words,
    mlm_mask,
    remove_color_words,
    tokenize,
    tokenize_batch,
)

CAPTIONS = [
    "A woman in a red coat and blue jeans.",
    "The man wears a black T-shirt, grey shorts and white sneakers; he carries a backpack.",
    "A young girl with long brown hair, wearing a pink dress and holding an umbrella.",
    "He is walking with a greyish-brown jacket over his shoulder",
    "A pedestrian   in dark navy trousers & khaki shoes (slightly worn) is looking at 2 phones",
    "woman's yellow bag",
]

_WORDS = (
    "man woman person wearing black white red blue jacket shirt pants shoes bag backpack "
    "walking long short hair glasses hat carrying holding grey green striped dress skirt "
    "jeans coat sneakers boots the a with and of in on his her"
).split()


@pytest.fixture(scope="module")
def base():
    return SimpleTokenizer()


def _random_captions(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=int(rng.integers(3, 30)))) + "." for _ in range(n)]


# ---------------------------------------------------------------------- constants, tokenize


def test_constants_match_clip_vocabulary(base):
    assert SOT_TOKEN_ID == base.sot_token_id == 49406
    assert EOT_TOKEN_ID == base.eot_token_id == 49407
    assert MASK_TOKEN_ID == base.vocab_size == 49408
    assert VOCAB_SIZE == MASK_TOKEN_ID + 1 == 49409
    assert CONTEXT_LENGTH == 77


@pytest.mark.parametrize("text", CAPTIONS)
def test_tokenize_matches_open_clip(text):
    ids = tokenize(text)
    assert ids.dtype == torch.long and ids.shape == (77,)
    assert torch.equal(ids, open_clip.tokenize([text])[0])
    assert ids[0] == SOT_TOKEN_ID


@pytest.mark.parametrize("text", CAPTIONS)
def test_decode_round_trip(text):
    decoded = get_tokenizer().decode(tokenize(text))
    assert "".join(decoded.split()) == "".join(text.lower().split())


def test_long_caption_truncated_with_eot_last():
    text = " ".join(f"word{i % 7} striped" for i in range(100))  # 200 words
    ids = tokenize(text)
    assert ids.shape == (77,)
    assert ids[0] == SOT_TOKEN_ID and ids[-1] == EOT_TOKEN_ID
    assert (ids[1:-1] != EOT_TOKEN_ID).all() and (ids != 0).all()
    assert torch.equal(ids, open_clip.tokenize([text])[0])
    full, _ = encode_words(text, None)
    assert len(full) > 77 and ids[1:-1].tolist() == full[1:76]
    short = tokenize(text, context_length=10)
    assert short.shape == (10,) and short[-1] == EOT_TOKEN_ID


def test_tokenize_batch_stacks_rows():
    batch = tokenize_batch(CAPTIONS, context_length=40)
    assert batch.shape == (len(CAPTIONS), 40)
    for row, text in zip(batch, CAPTIONS):
        assert torch.equal(row, tokenize(text, 40))


# ---------------------------------------------------------------------- word boundaries


@pytest.mark.parametrize("text", CAPTIONS)
def test_encode_words_matches_bpe_and_marks_specials(text, base):
    ids, word_ids = encode_words(text)
    assert len(ids) == len(word_ids) == 77
    n = len(base.encode(text))
    assert ids[1 : n + 1] == base.encode(text)
    assert word_ids[0] == -1 and word_ids[n + 1] == -1
    assert all(w == -1 for w in word_ids[n + 1 :])
    inner = word_ids[1 : n + 1]
    assert inner[0] == 0
    assert all(b - a in (0, 1) for a, b in zip(inner, inner[1:]))
    words = get_tokenizer().split_words(text)
    assert inner[-1] == len(words) - 1
    strings = get_tokenizer().word_strings(ids, word_ids)
    assert [strings[i] for i in range(len(words))] == words


def test_word_ids_of_a_multi_token_word(base):
    ids, word_ids = encode_words("a greyish t-shirt", None)
    grey, ish = base.encoder["grey"], base.encoder["ish</w>"]
    assert ids == [SOT_TOKEN_ID, base.encoder["a</w>"], grey, ish] + [
        base.encoder[p] for p in ("t</w>", "-</w>", "shirt</w>")
    ] + [EOT_TOKEN_ID]
    assert word_ids == [-1, 0, 1, 1, 2, 3, 4, -1]


# ---------------------------------------------------------------------- MLM masking


def _caption_positions(ids):
    ids = torch.as_tensor(ids)
    eot = int((ids == EOT_TOKEN_ID).nonzero()[0])
    pos = torch.zeros_like(ids, dtype=torch.bool)
    pos[1:eot] = True
    return pos


def test_mlm_rate_split_and_labels():
    rng = np.random.default_rng(0)
    n_words = n_chosen = n_mask = n_random = n_kept = 0
    for text in _random_captions(600):
        ids = tokenize(text)
        masked, labels = mlm_mask(ids, rng)
        chosen = labels != 0
        words = _caption_positions(ids)
        assert not (chosen & ~words).any()
        assert torch.equal(masked[~chosen], ids[~chosen])
        assert torch.equal(labels[chosen], ids[chosen])
        assert chosen.any()
        n_words += int(words.sum())
        n_chosen += int(chosen.sum())
        n_mask += int((masked[chosen] == MASK_TOKEN_ID).sum())
        changed = chosen & (masked != ids) & (masked != MASK_TOKEN_ID)
        n_random += int(changed.sum())
        n_kept += int((chosen & (masked == ids)).sum())
        replaced = masked[changed]
        assert ((replaced >= 1) & (replaced <= 49405)).all()
    assert 0.135 < n_chosen / n_words < 0.17
    assert n_mask / n_chosen == pytest.approx(0.8, abs=0.03)
    assert n_random / n_chosen == pytest.approx(0.1, abs=0.025)
    assert n_kept / n_chosen == pytest.approx(0.1, abs=0.025)


def test_mlm_deterministic_given_seed():
    ids = tokenize_batch(_random_captions(8, seed=1))
    a = mlm_mask(ids, np.random.default_rng(7))
    b = mlm_mask(ids, np.random.default_rng(7))
    c = mlm_mask(ids, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(mlm_mask(ids, 7)[0], a[0])
    assert a[0].shape == ids.shape and a[1].shape == ids.shape


def test_mlm_always_chooses_one_token():
    ids = tokenize("hi")
    for seed in range(20):
        masked, labels = mlm_mask(ids, np.random.default_rng(seed))
        assert int((labels != 0).sum()) == 1 and labels[1] == ids[1]
    empty = tokenize("")
    masked, labels = mlm_mask(empty, np.random.default_rng(0))
    assert torch.equal(masked, empty) and not labels.any()


def test_mlm_respects_positions_allowed():
    text = "a woman in a red coat and blue jeans with a black bag"
    ids, word_ids = encode_words(text)
    allowed = attribute_word_mask(ids, word_ids)
    rng = np.random.default_rng(3)
    hits = torch.zeros(77, dtype=torch.bool)
    for _ in range(200):
        _, labels = mlm_mask(ids, rng, prob=0.5, positions_allowed=allowed)
        hits |= labels != 0
    assert not (hits & ~allowed).any()
    assert torch.equal(hits, allowed)


def test_mlm_whole_word_masks_every_token_of_a_word():
    text = "a greyish reddish t-shirt and bluish jeans"
    ids, word_ids = encode_words(text)
    wid = torch.tensor(word_ids)
    rng = np.random.default_rng(4)
    for _ in range(50):
        _, labels = mlm_mask(ids, rng, prob=0.3, word_ids=word_ids)
        chosen = labels != 0
        assert chosen.any()
        for w in wid[chosen].unique():
            assert chosen[wid == w].all()


# ---------------------------------------------------------------------- colours


def test_color_lexicon():
    palette = "black white grey red blue green yellow orange pink purple brown beige navy khaki"
    assert set(palette.split()) <= COLOR_WORDS
    for w in ("gray", "tan", "maroon", "turquoise", "lavender", "reddish", "grayish", "whitish"):
        assert w in COLOR_WORDS
    for w in ("dark", "light", "shirt", "a"):
        assert w not in COLOR_WORDS


def test_mask_color_words_masks_exactly_colour_tokens(base):
    text = "A woman in a red coat and blue jeans"
    ids = tokenize(text)
    masked, labels = mask_color_words(text)
    red, blue = base.encoder["red</w>"], base.encoder["blue</w>"]
    expected = (ids == red) | (ids == blue)
    assert int(expected.sum()) == 2
    assert torch.equal(masked == MASK_TOKEN_ID, expected)
    assert torch.equal(masked[~expected], ids[~expected])
    assert torch.equal(labels, torch.where(expected, ids, torch.zeros_like(ids)))
    assert get_tokenizer().decode(masked) == "a woman in a <|mask|> coat and <|mask|> jeans"


def test_color_word_mask_covers_multi_token_words_and_ids_input():
    ids, word_ids = encode_words("greyish-brown hair and a navy bag")
    mask = color_word_mask(ids, word_ids)
    words = get_tokenizer().word_strings(ids, word_ids)
    marked = {words[w] for w, m in zip(word_ids, mask.tolist()) if m}
    assert marked == {"greyish", "brown", "navy"}
    assert int(mask.sum()) == sum(1 for w in word_ids if w >= 0 and words[w] in marked)
    masked, labels = mask_color_words(torch.tensor(ids), word_ids)
    assert torch.equal(masked == MASK_TOKEN_ID, mask)
    with pytest.raises(ValueError):
        mask_color_words(torch.tensor(ids))


def test_attribute_word_mask_skips_stop_words_and_punctuation():
    ids, word_ids = encode_words("A woman is wearing a long coat, with his red bag.")
    words = get_tokenizer().word_strings(ids, word_ids)
    mask = attribute_word_mask(ids, word_ids)
    marked = {words[w] for w, m in zip(word_ids, mask.tolist()) if m}
    assert marked == {"woman", "long", "coat", "red", "bag"}
    no_colour = attribute_word_mask(ids, word_ids, exclude_colors=True)
    assert {words[w] for w, m in zip(word_ids, no_colour.tolist()) if m} == marked - {"red"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("black and white shirt", "shirt"),
        ("A woman in a red coat and blue jeans.", "A woman in a coat and jeans."),
        ("Red shirt, black pants.", "Shirt, pants."),
        ("An orange bag and a red umbrella", "A bag and an umbrella"),
        ("a man in black, carrying a bag", "a man, carrying a bag"),
        ("a red, white and blue flag", "a flag"),
        (
            "She wears a light-blue top and dark grey trousers with red-and-white striped socks.",
            "She wears a top and trousers with striped socks.",
        ),
        ("a blue-colored backpack and a shirt of red colour.", "a backpack and a shirt."),
        ("a man with a t-shirt", "a man with a t-shirt"),
    ],
)
def test_remove_color_words_examples(text, expected):
    assert remove_color_words(text) == expected


def test_remove_color_words_leaves_no_colour_word():
    texts = CAPTIONS + _random_captions(200, seed=5)
    for text in texts:
        out = remove_color_words(text)
        assert not any(w.lower() in COLOR_WORDS for w in regex.findall(r"\p{L}+", out))
        ids, word_ids = encode_words(out)
        assert not color_word_mask(ids, word_ids).any()
        assert "  " not in out and not out.startswith((",", " "))
        kept = [w for w in regex.findall(r"\p{L}+", text.lower()) if w not in COLOR_WORDS]
        assert len(regex.findall(r"\p{L}+", out)) <= len(kept)
