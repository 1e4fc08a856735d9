"""CLIP's activation is part of the model: decided once, recorded in config.yaml and in every
checkpoint, and used by every rebuild (``--eval-only``, ``--resume``, a later stage, the search
index, the ONNX export).

The run starts from a tiny CLIP saved in OpenAI's format (which switches QuickGELU on); each
rebuild must reproduce the features of a model built with QuickGELU and the trained weights,
exactly, and must differ from the same weights under GELU (so these tests can fail).
"""

import argparse
import shutil

import plugins  # noqa: F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest
import torch
import torch.nn.functional as F
import yaml
from fastreid.modeling.meta_arch import build_model

from plugins.config import read_model_record, resolve_clip_activation
from plugins.data.captions import tokenize_batch
from plugins.engine import PluginTrainer, build_config
from plugins.engine.checkpoint import Checkpointer, CheckpointMismatchError
from plugins.engine.defaults import build_run_config
from plugins.modeling.clip import build_clip_model, clip_activation, clip_kwargs_from_cfg
from plugins.search import SearchIndex, build_index
from plugins.search.onnx_encoders import OnnxEncoders, compare_with_torch
from tests.fixtures_model import CAPTIONS, ROOT
from tests.fixtures_text import write_cuhkpedes, write_image
from tests.test_onnx_export import TOL, export_onnx
from tests.test_stages import _run as run_toy_stages
from tests.test_train_net import TINY, final_results, train_net

TIPR = "configs/Demo/tipr_clip_sdm.yml"
RUN = [
    "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.MAX_EPOCH", "2",
    "SOLVER.CHECKPOINT_PERIOD", "1",
    "TEST.EVAL_PERIOD", "2",
    "SOLVER.BASE_LR", "1e-3",
]  # fmt: skip
KEY = "MODEL.CLIP.QUICKGELU"


def openai_format_file(path, config=TIPR, opts=()):
    """A tiny CLIP of ``config``'s architecture saved as OpenAI's state dicts are (with
    ``input_resolution``), its MLPs scaled so that GELU and QuickGELU differ clearly."""
    cfg = build_config(str(ROOT / config), TINY + list(opts))
    kwargs = dict(clip_kwargs_from_cfg(cfg), weights="", quick_gelu=None)
    torch.manual_seed(3)
    model = build_clip_model(**kwargs)
    state = model.state_dict()
    for key in state:
        if key.endswith("mlp.c_fc.weight"):
            state[key] = state[key] * 6
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77))
    torch.save(state, path)
    return str(path)


def from_openai(path):
    return ["MODEL.BACKBONE.PRETRAIN", "True", "MODEL.CLIP.WEIGHTS", str(path)]


def reference_model(weights, quick_gelu, config=TIPR):
    """``config``'s evaluation model built with the given activation, loaded from ``weights``
    without the record check: what the trained model computes (or does not)."""
    cfg = build_config(str(ROOT / config), TINY + ["MODEL.TRAINING_HEADS", "False"])
    cfg.MODEL.CLIP.QUICKGELU = quick_gelu
    model = build_model(cfg)
    state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    return model.eval()


def sample_inputs():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 64, 32, generator=gen) * 255
    return {"images": images}, tokenize_batch(CAPTIONS, 48)


@torch.no_grad()
def features(model):
    images, token_ids = sample_inputs()
    model.eval()
    return model.encode_image(dict(images)), model.encode_text(token_ids)


def assert_same_features(model, reference):
    for got, want in zip(features(model), features(reference)):
        assert torch.equal(got, want)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CLIP + SDM run trained from the OpenAI-format file, with per-epoch checkpoints."""
    tmp = tmp_path_factory.mktemp("activation")
    data = tmp / "data"
    write_cuhkpedes(str(data))
    weights = openai_format_file(tmp / "ViT-tiny-openai.pt")
    out = tmp / "run"
    log = train_net(TIPR, str(data), *RUN, *from_openai(weights), "OUTPUT_DIR", str(out))
    return argparse.Namespace(tmp=tmp, data=str(data), clip=weights, out=out, log=log)


def test_training_decides_and_records_quickgelu(trained):
    assert "CLIP activation: QuickGELU" in trained.log and "OpenAI's format" in trained.log
    with open(trained.out / "config.yaml") as f:
        assert yaml.safe_load(f)["MODEL"]["CLIP"]["QUICKGELU"] is True
    for name in ("model_0000.pth", "model_final.pth"):
        assert read_model_record(str(trained.out / name)) == {KEY: True}
    final = str(trained.out / "model_final.pth")
    quick, plain = reference_model(final, True), reference_model(final, False)
    # The test means something only if the two activations give other features.
    assert not torch.allclose(features(quick)[0], features(plain)[0], atol=1e-4)
    assert not torch.allclose(features(quick)[1], features(plain)[1], atol=1e-4)


def test_eval_only_rebuilds_the_recorded_activation(trained):
    final = str(trained.out / "model_final.pth")
    args = argparse.Namespace(
        config_file=str(ROOT / TIPR),
        opts=TINY + ["MODEL.WEIGHTS", final, "OUTPUT_DIR", str(trained.tmp / "ev")],
        eval_only=True,
        resume=False,
        extra_imports=(),
    )
    cfg, note = build_run_config(args)
    assert cfg.MODEL.CLIP.QUICKGELU is True and f"recorded in {final}" in note
    model = PluginTrainer.build_model(cfg)
    Checkpointer(model).load(final, strict=True, evaluation=True)
    assert_same_features(model, reference_model(final, True))

    # Through tools/train_net.py: the training run's metrics, from the original config file.
    evaluated = train_net(
        TIPR, trained.data, *RUN, "MODEL.WEIGHTS", final, "OUTPUT_DIR", str(trained.tmp / "ev2"),
        eval_only=True,
    )  # fmt: skip
    assert final_results(evaluated, "CUHKPEDES") == final_results(trained.log, "CUHKPEDES")
    assert "CLIP tiny-vit: QuickGELU activation" in evaluated


def test_resumed_run_equals_the_uninterrupted_one(trained):
    resumed = trained.tmp / "resumed"
    resumed.mkdir()
    shutil.copy(trained.out / "model_0000.pth", resumed / "model_0000.pth")
    (resumed / "last_checkpoint").write_text("model_0000.pth")
    log = train_net(
        TIPR, trained.data, *RUN, *from_openai(trained.clip), "OUTPUT_DIR", str(resumed),
        resume=True,
    )  # fmt: skip
    assert "from epoch 1" in log
    full = torch.load(trained.out / "model_final.pth", weights_only=True)["model"]
    again = torch.load(resumed / "model_final.pth", weights_only=True)["model"]
    different = [k for k in full if not torch.equal(full[k], again[k])]
    assert not different, different[:5]


def test_search_index_and_onnx_export_use_the_recorded_activation(trained, tmp_path):
    final = str(trained.out / "model_final.pth")
    reference = reference_model(final, True)
    gallery = tmp_path / "gallery"
    colours = [(200, 30, 30), (20, 200, 40), (30, 30, 220), (240, 240, 20)]
    for i, colour in enumerate(colours):
        write_image(str(gallery / f"{i}.png"), colour, size=(16, 32))
    index_dir = str(tmp_path / "index")
    opts = TINY + ["DATALOADER.TEST_NUM_WORKERS", "0", "MODEL.WEIGHTS", final]
    build_index(str(ROOT / TIPR), opts, str(gallery), index_dir, echo=lambda *a, **k: None)
    index = SearchIndex.load(index_dir)
    stored = torch.from_numpy(index.index.reconstruct_n(0, len(index)))
    from tests.test_search import brute_force_features

    cfg = build_config(str(ROOT / TIPR), TINY)
    expected = brute_force_features(reference, cfg, index.items)
    torch.testing.assert_close(stored, expected, rtol=0, atol=1e-6)
    plain = brute_force_features(reference_model(final, False), cfg, index.items)
    assert not torch.allclose(stored, plain, atol=1e-4)

    out = tmp_path / "onnx"
    proc = export_onnx("--config-file", ROOT / TIPR, *TINY, "MODEL.WEIGHTS", final, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    stats = compare_with_torch(reference, OnnxEncoders(str(out), device="cpu"))
    for side in ("image", "text"):
        assert stats[side]["max_abs_diff"] <= TOL * stats[side]["scale"], (side, stats)


def test_later_stage_is_built_as_the_first_stage_recorded(trained, rgbt, tmp_path):
    out = tmp_path / "stages"
    status, log = run_toy_stages(rgbt, out, *from_openai(trained.clip))
    assert status == 0, log[-5000:]
    first = str(out / "first" / "model_final.pth")
    assert f"Stage 'second': CLIP activation: QuickGELU (recorded in {first})" in log
    for stage in ("first", "second"):
        assert read_model_record(str(out / stage / "model_final.pth")) == {KEY: True}
        with open(out / stage / "config.yaml") as f:
            assert yaml.safe_load(f)["MODEL"]["CLIP"]["QUICKGELU"] is True


# ------------------------------------------------------------------------ the decision itself
def _cfg(*opts):
    return build_config(str(ROOT / TIPR), TINY + ["MODEL.HEADS.NUM_CLASSES", "3", *opts])


def test_decision_from_the_weights_file_and_the_architecture(tmp_path):
    openai = openai_format_file(tmp_path / "openai.pt")
    cfg = _cfg(*from_openai(openai))
    assert "OpenAI's format" in resolve_clip_activation(cfg) and cfg.MODEL.CLIP.QUICKGELU is True

    state = torch.load(openai, weights_only=True)
    del state["input_resolution"], state["context_length"]
    open_clip_file = str(tmp_path / "open_clip.pt")
    torch.save(state, open_clip_file)
    cfg = _cfg(*from_openai(open_clip_file))
    assert "MODEL.CLIP.QUICKGELU True" in resolve_clip_activation(cfg)
    assert cfg.MODEL.CLIP.QUICKGELU is False  # tiny-vit's own: GELU
    cfg = _cfg(*from_openai(open_clip_file), KEY, "True")
    resolve_clip_activation(cfg)
    assert cfg.MODEL.CLIP.QUICKGELU is True
    assert clip_activation(build_model(cfg)) is True
    cfg = _cfg(KEY, "auto")  # random initialisation: the architecture's own
    resolve_clip_activation(cfg)
    assert cfg.MODEL.CLIP.QUICKGELU is False
    with pytest.raises(ValueError, match="auto, True or False"):
        resolve_clip_activation(_cfg(KEY, "maybe"))


def test_checkpoint_record_wins_and_contradictions_are_errors(tmp_path):
    cfg = _cfg(KEY, "True")
    model = build_model(cfg)
    path = str(tmp_path / "model.pth")
    Checkpointer(model, str(tmp_path)).save("model")
    assert read_model_record(path) == {KEY: True}

    cfg = _cfg()
    assert "recorded in" in resolve_clip_activation(cfg, path)
    assert cfg.MODEL.CLIP.QUICKGELU is True
    with pytest.raises(ValueError, match="records a model built with QuickGELU"):
        resolve_clip_activation(_cfg(KEY, "False"), path)

    # A model built otherwise than the checkpoint says is refused on load.
    plain = build_model(_cfg(KEY, "False"))
    with pytest.raises(CheckpointMismatchError, match="built with GELU"):
        Checkpointer(plain).load(path, strict=True)

    # A checkpoint without a record (written before records existed): the architecture's own,
    # and the message says how to choose.
    torch.save({"model": model.state_dict()}, str(tmp_path / "old.pth"))
    cfg = _cfg()
    assert "records no activation" in resolve_clip_activation(cfg, str(tmp_path / "old.pth"))
    assert cfg.MODEL.CLIP.QUICKGELU is False


def test_quickgelu_changes_the_features_the_checkpoint_gives(tmp_path):
    """The record matters: the same weights under the other activation are another function."""
    cfg = _cfg(KEY, "True")
    model = build_model(cfg)
    a = F.normalize(features(model)[1], dim=-1)
    cfg = _cfg(KEY, "False")
    other = build_model(cfg)
    other.load_state_dict(model.state_dict())
    b = F.normalize(features(other)[1], dim=-1)
    assert not torch.allclose(a, b, atol=1e-5)
