"""CLIP building, local weight loading, token encoders and the fast-reid backbone (CPU, offline)."""

import argparse
import json
import logging
import math
import os
import re
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from open_clip.transformer import QuickGELU  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)
from plugins.modeling.clip import (  # noqa: E402
    CLIP_PIXEL_MEAN,
    CLIP_PIXEL_STD,
    EOT_TOKEN_ID,
    MASK_TOKEN_ID,
    SOT_TOKEN_ID,
    CLIPDualEncoder,
    CLIPImageEncoder,
    CLIPPickleError,
    CLIPTextEncoder,
    CLIPWeightsError,
    build_clip_model,
    build_clip_model_from_cfg,
    clip_kwargs_from_cfg,
    count_parameters,
    eot_positions,
    get_clip_config,
)

TINY_SIZE = (64, 32)


def tiny(name="tiny-vit", **kwargs):
    kwargs.setdefault("image_size", TINY_SIZE)
    return build_clip_model(name, **kwargs).eval()


def images(batch=2, size=TINY_SIZE):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def assert_same_state(model, other):
    expected, actual = model.state_dict(), other.state_dict()
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return tiny("tiny-vit")


# --------------------------------------------------------------------------------- building
def encode_against_reference(model, grid_size):
    """Encoder of ``model.visual`` checked for ``grid_size``, with its outputs on ``images()``.

    Returns (encoder, global (2, D), tokens (2, N, D), model.encode_image reference (2, D)).
    """
    encoder = CLIPImageEncoder(model.visual)
    assert encoder.grid_size == grid_size and encoder.embed_dim == 64
    x = images()
    with torch.no_grad():
        global_feat, tokens = encoder(x)
        reference = model.encode_image(x)
    return encoder, global_feat, tokens, reference


def test_tiny_vit_shapes_match_open_clip(tiny_vit):
    encoder, global_feat, tokens, reference = encode_against_reference(tiny_vit, (8, 4))
    with torch.no_grad():
        all_tokens = encoder.forward_tokens(images())
    assert global_feat.shape == (2, 64) and tokens.shape == (2, 32, 64)
    assert all_tokens.shape == (2, 33, 64)
    torch.testing.assert_close(all_tokens[:, 0], global_feat)
    torch.testing.assert_close(global_feat, reference)


def test_tiny_vit_overlapping_stride():
    model = tiny("tiny-vit", stride=4)
    encoder = CLIPImageEncoder(model)
    grid = ((64 - 8) // 4 + 1, (32 - 8) // 4 + 1)
    assert encoder.grid_size == grid == (15, 7)
    assert model.visual.conv1.stride == (4, 4)
    assert model.visual.positional_embedding.shape == (15 * 7 + 1, 64)
    with torch.no_grad():
        global_feat, tokens = encoder(images())
    assert global_feat.shape == (2, 64) and tokens.shape == (2, 105, 64)
    with pytest.raises(ValueError, match="grid"):
        encoder(images(size=(96, 32)))


def test_tiny_rn_shapes_match_open_clip():
    torch.manual_seed(0)
    _, global_feat, tokens, reference = encode_against_reference(tiny("tiny-rn"), (2, 1))
    assert global_feat.shape == (2, 64) and tokens.shape == (2, 2, 64)
    torch.testing.assert_close(global_feat, reference)
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny("tiny-rn", image_size=(60, 32))


def test_json_path_config(tmp_path):
    cfg = get_clip_config("tiny-vit")
    cfg["vision_cfg"]["patch_size"] = 16
    path = tmp_path / "tiny-p16.json"
    path.write_text(json.dumps(cfg))
    model = build_clip_model(str(path), image_size=(64, 32))
    assert model.visual.grid_size == (4, 2)
    with pytest.raises(ValueError, match="neither"):
        get_clip_config("no-such-architecture")


def test_vit_b16_at_384x128():
    model = build_clip_model("ViT-B-16", image_size=(384, 128))
    encoder = CLIPImageEncoder(model.visual)
    text = CLIPTextEncoder(model)
    assert encoder.grid_size == (24, 8)
    assert encoder.embed_dim == text.embed_dim == 512
    assert model.token_embedding.weight.shape == (49409, 512)
    count = count_parameters(model)
    print(f"ViT-B-16 at 384x128, vocab 49409: {count:,} parameters")
    # ViT-B/16 CLIP at 224 has 149,620,737; 384x128 has 4 fewer positions (193 vs 197, width
    # 768) and the vocabulary one more row (width 512).
    assert count == 149_620_737 - 4 * 768 + 512
    with torch.no_grad():
        global_feat, tokens = encoder(torch.randn(1, 3, 384, 128))
    assert global_feat.shape == (1, 512) and tokens.shape == (1, 192, 512)


# --------------------------------------------------------------------------------- weights
def _scripted_openai_like(model):
    """A TorchScript archive whose state dict has OpenAI's keys (incl. its metadata entries)."""
    for key, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49409)):
        if hasattr(model, key):
            delattr(model, key)  # open_clip keeps these as plain ints, OpenAI as archive entries
        model.register_buffer(key, torch.tensor(value))
    return torch.jit.script(model)


def test_checkpoint_round_trip_every_format(tmp_path, tiny_vit):
    state = tiny_vit.state_dict()

    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    wrapped = tmp_path / "open_clip.bin"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    safetensors = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors))
    for path in (plain, wrapped, safetensors):
        loaded = tiny("tiny-vit", weights=str(path))
        assert_same_state(tiny_vit, loaded)
        assert not isinstance(loaded.transformer.resblocks[0].mlp.gelu, QuickGELU)

    torch.manual_seed(1)
    source = tiny("tiny-vit")
    reference = {k: v.clone() for k, v in source.state_dict().items()}
    archive = tmp_path / "ViT-tiny.pt"
    torch.jit.save(_scripted_openai_like(source), str(archive))
    loaded = tiny("tiny-vit", weights=str(archive))
    assert loaded.state_dict().keys() == reference.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key
    # OpenAI's models were trained with QuickGELU; their archives must switch it on.
    assert isinstance(loaded.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_resnet_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny("tiny-rn")
    path = tmp_path / "rn.pt"
    torch.save(model.state_dict(), path)
    assert_same_state(model, tiny("tiny-rn", weights=str(path)))


def _p16_config(tmp_path):
    cfg = get_clip_config("tiny-vit")
    cfg["vision_cfg"]["patch_size"] = 16
    path = tmp_path / "tiny-vit-p16.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_square_checkpoint_interpolated_to_person_size(tmp_path):
    name = _p16_config(tmp_path)
    square = build_clip_model(name, image_size=(224, 224))
    assert square.visual.grid_size == (14, 14)
    width = square.visual.positional_embedding.shape[1]
    cls_row = torch.randn(width)
    constant = torch.randn(width)
    path = tmp_path / "square.pt"

    state = square.state_dict()
    state["visual.positional_embedding"] = torch.cat([cls_row[None], constant.expand(196, -1)])
    torch.save(state, path)
    model = build_clip_model(name, image_size=(384, 128), weights=str(path))
    pos = model.visual.positional_embedding.detach()
    assert model.visual.grid_size == (24, 8) and pos.shape == (24 * 8 + 1, width)
    assert torch.equal(pos[0], cls_row)
    torch.testing.assert_close(pos[1:], constant.expand(192, -1), atol=1e-5, rtol=1e-5)
    for key, value in state.items():  # everything else is copied as is
        if key != "visual.positional_embedding":
            assert torch.equal(model.state_dict()[key], value), key

    # A pattern varying only down the image must stay constant along each resized row: this
    # catches a transposed (W, H) grid.
    rows = torch.linspace(-1, 1, 14)[:, None, None].expand(14, 14, width).reshape(196, width)
    state["visual.positional_embedding"] = torch.cat([cls_row[None], rows])
    torch.save(state, path)
    model = build_clip_model(name, image_size=(384, 128), weights=str(path))
    grid = model.visual.positional_embedding.detach()[1:].reshape(24, 8, width)
    torch.testing.assert_close(grid, grid[:, :1].expand(-1, 8, -1), atol=1e-5, rtol=1e-5)
    assert grid[0, 0, 0] < -0.9 and grid[-1, 0, 0] > 0.9

    # Overlapping patches: the same checkpoint fills a (24 - 1) * 2 + 1 by 15 grid.
    model = build_clip_model(name, image_size=(384, 128), stride=8, weights=str(path))
    assert model.visual.positional_embedding.shape == (47 * 15 + 1, width)


def test_resnet_attnpool_grid_interpolated(tmp_path):
    square = build_clip_model("tiny-rn", image_size=(224, 224))
    path = tmp_path / "rn224.pt"
    state = square.state_dict()
    key = "visual.attnpool.positional_embedding"
    channels = state[key].shape[1]
    state[key] = torch.cat([torch.ones(1, channels), torch.full((49, channels), 3.0)])
    torch.save(state, path)
    model = build_clip_model("tiny-rn", image_size=(384, 128), weights=str(path))
    pos = model.visual.attnpool.positional_embedding.detach()
    assert pos.shape == (12 * 4 + 1, channels)
    assert torch.equal(pos[0], torch.ones(channels))
    torch.testing.assert_close(pos[1:], torch.full((48, channels), 3.0))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_position_grid_resize_mode(tmp_path, mode):
    """Bilinear without antialiasing (IRRA's and CLIP-ReID's resize, the default) or bicubic
    with antialiasing, for ViT and ResNet grids alike."""
    torch.manual_seed(2)
    for name, key, size in (
        ("tiny-vit", "visual.positional_embedding", (64, 32)),
        ("tiny-rn", "visual.attnpool.positional_embedding", (128, 64)),
    ):
        square = build_clip_model(name, image_size=(224, 224), warn_random_init=False)
        state = square.state_dict()
        state[key] = torch.randn_like(state[key])
        path = tmp_path / f"{name}.pt"
        torch.save(state, path)
        kwargs = {} if mode == "bilinear" else {"pos_embed_resize": mode}
        model = build_clip_model(name, image_size=size, weights=str(path), **kwargs)
        grid = model.visual.grid_size
        side = math.isqrt(state[key].shape[0] - 1)
        source = state[key][1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)

        def resized(how, source=source, grid=grid):
            out = F.interpolate(
                source, size=grid, mode=how, align_corners=False, antialias=how == "bicubic"
            )
            return out.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)

        got = model.state_dict()[key]
        assert torch.equal(got[0], state[key][0])
        torch.testing.assert_close(got[1:], resized(mode), rtol=0, atol=1e-6)
        other = "bicubic" if mode == "bilinear" else "bilinear"
        assert not torch.allclose(got[1:], resized(other), atol=1e-4)
    with pytest.raises(ValueError, match="POS_EMBED_RESIZE"):
        build_clip_model("tiny-rn", image_size=(128, 64), weights=str(path), pos_embed_resize="x")


def test_position_grid_resize_key_reaches_the_builder():
    from plugins.engine import build_config

    config = os.path.join(os.path.dirname(__file__), "..", "configs", "Demo", "irra.yml")
    assert clip_kwargs_from_cfg(build_config(config))["pos_embed_resize"] == "bilinear"
    cfg = build_config(config, ["MODEL.CLIP.POS_EMBED_RESIZE", "bicubic"])
    assert clip_kwargs_from_cfg(cfg)["pos_embed_resize"] == "bicubic"


def test_mask_token_row_is_the_mean(tmp_path):
    torch.manual_seed(0)
    old = tiny("tiny-vit", vocab_size=49408)
    path = tmp_path / "vocab49408.pt"
    torch.save(old.state_dict(), path)
    model = tiny("tiny-vit", vocab_size=49409, weights=str(path))
    old_rows = old.token_embedding.weight.detach()
    rows = model.token_embedding.weight.detach()
    assert rows.shape == (49409, 64)
    assert torch.equal(rows[:49408], old_rows)
    torch.testing.assert_close(rows[MASK_TOKEN_ID], old_rows.mean(dim=0))


def test_wrong_architecture_reports_keys(tmp_path, tiny_vit):
    path = tmp_path / "vit.pt"
    torch.save(tiny_vit.state_dict(), path)
    with pytest.raises(RuntimeError, match="missing .*unexpected"):
        tiny("tiny-rn", weights=str(path))


@pytest.mark.parametrize(
    "weights, needles",
    [
        (
            "/nonexistent/ViT-B-16.pt",
            ["no such file: /nonexistent/ViT-B-16.pt", "MODEL.CLIP.WEIGHTS"],
        ),
        ("missing.safetensors", ["no such file: missing.safetensors"]),
        # Typos and relative paths are missing files, never download tags.
        ("ViT-B-16.ptt", ["no such file: ViT-B-16.ptt", "MODEL.CLIP.WEIGHTS /path/to/ViT-L-14.pt"]),
        ("weights/ViT-B-16", ["no such file: weights/ViT-B-16"]),
        ("./ViT-B-16", ["no such file: ./ViT-B-16"]),
        ("~/no-such-dir/ViT-B-16.pt", ["no such file: ", "no-such-dir/ViT-B-16.pt"]),
        ("ViT-B-16", ["neither an existing file nor an open_clip download tag", "/path/to/"]),
        ("openai", ["download tag", "ViT-L-14.pt", "openaipublic", "MODEL.CLIP.WEIGHTS"]),
        ("laion2b_s32b_b82k", ["download tag", "huggingface.co/laion/"]),
        ("hf-hub:timm/vit_base_patch16_clip_224.openai", ["download tag", "huggingface.co/timm"]),
    ],
)
def test_unavailable_weights_fail_fast(weights, needles):
    start = time.perf_counter()
    with pytest.raises(CLIPWeightsError) as info:
        build_clip_model("ViT-L-14", image_size=(384, 128), weights=weights)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    # Building ViT-L-14 takes several seconds: the error must come before it.
    assert elapsed < 2.0
    if "no such file" in needles[0]:
        assert "download tag" not in message, message


def test_mistyped_extension_of_an_existing_file(tmp_path, tiny_vit):
    path = tmp_path / "ViT-tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    with pytest.raises(CLIPWeightsError, match="no such file: " + re.escape(f"{path}t")):
        tiny("tiny-vit", weights=f"{path}t")
    with pytest.raises(CLIPWeightsError, match="is a directory"):
        tiny("tiny-vit", weights=str(tmp_path))


class _CreatesFile:
    """Unpickling this object opens (creates) ``path``: stands in for any code a pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickle_that_runs_code_is_refused(tmp_path, tiny_vit):
    marker = tmp_path / "unpickled"
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": tiny_vit.state_dict(), "extra": _CreatesFile(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CLIPPickleError) as info:
        tiny("tiny-vit", weights=str(path))
    message = str(info.value)
    assert "MODEL.CLIP.ALLOW_PICKLE True" in message and str(path) in message, message
    assert "open" in message  # names what the file pickles
    cfg = _reid_cfg(WEIGHTS=str(path))
    cfg.MODEL.BACKBONE.PRETRAIN = True
    with pytest.raises(CLIPPickleError, match="MODEL.CLIP.ALLOW_PICKLE"):
        build_clip_model_from_cfg(cfg)
    assert not marker.exists(), "unpickling ran code from the checkpoint"


def test_pickled_checkpoint_loads_only_when_allowed(tmp_path, tiny_vit):
    # A training checkpoint carrying its argparse options: harmless, but needs full unpickling.
    path = tmp_path / "train.pth"
    torch.save({"state_dict": tiny_vit.state_dict(), "args": argparse.Namespace(lr=1e-5)}, path)
    cfg = _reid_cfg(WEIGHTS=str(path))
    cfg.MODEL.BACKBONE.PRETRAIN = True
    assert cfg.MODEL.CLIP.ALLOW_PICKLE is False
    with pytest.raises(CLIPPickleError, match="argparse.Namespace.*MODEL.CLIP.ALLOW_PICKLE"):
        build_clip_model_from_cfg(cfg)
    cfg.MODEL.CLIP.ALLOW_PICKLE = True
    assert_same_state(tiny_vit, build_clip_model_from_cfg(cfg).eval())
    assert_same_state(tiny_vit, tiny("tiny-vit", weights=str(path), allow_pickle=True))


# --------------------------------------------------------------------------------- text
def test_text_encoder_eot_with_mask_token(tiny_vit):
    text = CLIPTextEncoder(tiny_vit).eval()
    ids = torch.zeros(2, 77, dtype=torch.long)
    ids[0, :6] = torch.tensor([SOT_TOKEN_ID, 320, MASK_TOKEN_ID, 1125, 539, EOT_TOKEN_ID])
    ids[1, :4] = torch.tensor([SOT_TOKEN_ID, 2368, 786, EOT_TOKEN_ID])
    assert ids.argmax(dim=1).tolist() == [2, 3]  # CLIP's argmax shortcut picks the mask in row 0
    assert eot_positions(ids).tolist() == [5, 3]

    with torch.no_grad():
        global_feat, tokens, padding = text(ids)
        reference = tiny_vit.encode_text(ids[1:])
    assert global_feat.shape == (2, 64) and tokens.shape == (2, 77, 64)
    torch.testing.assert_close(global_feat, tokens[[0, 1], [5, 3]])
    torch.testing.assert_close(global_feat[1:], reference)  # no mask token: same as CLIP
    assert padding.dtype == torch.bool
    assert padding[0].tolist() == [False] * 6 + [True] * 71
    assert padding[1].tolist() == [False] * 4 + [True] * 73

    # Causal attention: what follows EOT cannot change the features up to EOT, and a shorter
    # sequence gives the same leading tokens.
    changed = ids.clone()
    changed[:, 10] = 999
    with torch.no_grad():
        torch.testing.assert_close(text(changed)[0], global_feat)
        torch.testing.assert_close(text(ids[:, :20])[1], tokens[:, :20])


def test_dual_encoder_shares_logit_scale(tiny_vit):
    dual = CLIPDualEncoder(tiny_vit)
    assert dual.logit_scale is tiny_vit.logit_scale
    names = [n for n, _ in dual.named_parameters()]
    assert "logit_scale" in names and len(names) == len(set(names))
    assert count_parameters(dual) == count_parameters(tiny_vit)


# --------------------------------------------------------------------------------- fast-reid
def _reid_cfg(**clip):
    from fastreid.config import get_cfg

    from plugins.config import add_plugins_config

    cfg = get_cfg()
    add_plugins_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "Baseline"
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.MODEL.BACKBONE.FEAT_DIM = 64
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.POOL_LAYER = "Identity"
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss",)
    cfg.MODEL.PIXEL_MEAN = CLIP_PIXEL_MEAN
    cfg.MODEL.PIXEL_STD = CLIP_PIXEL_STD
    cfg.MODEL.CLIP.NAME = "tiny-vit"
    cfg.INPUT.SIZE_TRAIN = list(TINY_SIZE)
    cfg.INPUT.SIZE_TEST = list(TINY_SIZE)
    for key, value in clip.items():
        setattr(cfg.MODEL.CLIP, key, value)
    return cfg


def test_backbone_in_fastreid_baseline():
    from fastreid.modeling import build_model
    from fastreid.utils.events import EventStorage

    torch.manual_seed(0)
    model = build_model(_reid_cfg())
    assert not hasattr(model.backbone.encoder, "text")
    assert count_parameters(model.backbone) < 1_000_000  # no text tower (3.2M token rows)
    batch = {"images": torch.rand(4, 3, *TINY_SIZE) * 255, "targets": torch.tensor([0, 1, 2, 3])}
    model.train()
    with EventStorage(0):
        losses = model({k: v.clone() for k, v in batch.items()})
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    losses["loss_cls"].backward()
    assert model.backbone.encoder.visual.conv1.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        feats = model({"images": batch["images"].clone()})
    assert feats.shape == (4, 64)


def test_backbone_feat_dim_must_match():
    from fastreid.modeling import build_model

    cfg = _reid_cfg()
    cfg.MODEL.BACKBONE.FEAT_DIM = 512
    with pytest.raises(ValueError, match="FEAT_DIM"):
        build_model(cfg)


# ------------------------------------------------------------- PRETRAIN / WEIGHTS from configs
def _model_cfg(kind, weights="", pretrain=False):
    """A tiny-vit config of each model that builds CLIP from a config (backbone, retrieval)."""
    from plugins.engine import build_config

    if kind == "backbone":
        cfg = _reid_cfg()
    else:
        config = {"retrieval": "clip_sdm_rgb.yml", "mganet": "mganet.yml"}[kind]
        opts = ["MODEL.CLIP.NAME", "tiny-vit", "MODEL.CLIP.STRIDE", "8", "MODEL.DEVICE", "cpu"]
        opts += ["INPUT.SIZE_TRAIN", str(list(TINY_SIZE)), "INPUT.SIZE_TEST", str(list(TINY_SIZE))]
        cfg = build_config(
            os.path.join(os.path.dirname(__file__), "..", "configs", "Demo", config), opts
        )
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = pretrain
    cfg.MODEL.CLIP.WEIGHTS = weights
    return cfg


def _visual(model):
    """The CLIP vision tower inside a fast-reid Baseline or a retrieval model."""
    encoder = model.backbone.encoder if hasattr(model, "backbone") else model.image_encoder
    return encoder.visual


MODEL_KINDS = ["backbone", "retrieval", "mganet"]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_pretrain_without_weights_is_an_error(kind):
    from fastreid.modeling import build_model

    with pytest.raises(CLIPWeightsError) as info:
        build_model(_model_cfg(kind, pretrain=True))
    message = str(info.value)
    for needle in (
        "MODEL.BACKBONE.PRETRAIN is True but MODEL.CLIP.WEIGHTS is empty",
        "MODEL.CLIP.WEIGHTS /path/to/tiny-vit.pt",
        "MODEL.BACKBONE.PRETRAIN False",
    ):
        assert needle in message, message


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_weights_without_pretrain_is_an_error(kind, tmp_path, tiny_vit):
    from fastreid.modeling import build_model

    path = tmp_path / "clip.pt"
    torch.save(tiny_vit.state_dict(), path)
    with pytest.raises(
        ValueError, match="ignored.*MODEL.BACKBONE.PRETRAIN True.*MODEL.CLIP.WEIGHTS"
    ):
        build_model(_model_cfg(kind, weights=str(path)))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_pretrain_with_weights_loads_them(kind, tmp_path, tiny_vit):
    from fastreid.modeling import build_model

    path = tmp_path / "clip.pt"
    torch.save(tiny_vit.state_dict(), path)
    torch.manual_seed(123)  # a different random initialisation than tiny_vit's
    model = build_model(_model_cfg(kind, weights=str(path), pretrain=True))
    loaded = _visual(model).state_dict()
    for key, value in tiny_vit.visual.state_dict().items():
        assert torch.equal(loaded[key], value), key
    with pytest.raises(CLIPWeightsError, match="no such file"):
        build_model(_model_cfg(kind, weights=str(tmp_path / "absent.pt"), pretrain=True))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_no_pretrain_no_weights_is_random_init_said_once(kind, caplog, tiny_vit):
    from fastreid.modeling import build_model

    caplog.set_level(logging.INFO, logger="plugins.modeling.clip")
    torch.manual_seed(123)
    model = build_model(_model_cfg(kind))
    lines = [r for r in caplog.records if "random initialisation" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, caplog.text
    weight = _visual(model).conv1.weight
    assert not torch.equal(weight, tiny_vit.visual.conv1.weight)
