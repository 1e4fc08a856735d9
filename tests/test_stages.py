"""The multi-stage engine: freezing, lr factors, the feature cache, and two stages end to end."""

import errno
import json
import os
import subprocess
import sys

import plugins  # noqa: F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest
import torch
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn

from plugins.engine import build_config
from plugins.engine.optimizer import apply_lr_factors
from plugins.engine.stages import (
    FeatureTrainSet,
    Stage,
    freeze_for_stage,
    load_or_build_cache,
    model_stages,
    publish_results,
    stage_config,
    tensor_fingerprint,
)
from plugins.modeling.retrieval import CLIPRetrieval
from tests.test_train_net import ROOT, TINY, TRAIN_NET, final_results

TOY = "ToyTwoStage"


if TOY not in META_ARCH_REGISTRY._obj_map:

    @META_ARCH_REGISTRY.register()
    class ToyTwoStage(CLIPRetrieval):
        """CLIP + SDM trained in two stages: the text tower alone, then everything but the
        first patch layer with the text tower at lr x 0 (so it must not move)."""

        @classmethod
        def stages(cls, cfg):
            return [
                Stage("first", opts=("SOLVER.MAX_EPOCH", 2), trainable=("text_encoder.",)),
                Stage(
                    "second",
                    opts=("SOLVER.MAX_EPOCH", 1),
                    frozen=("image_encoder.visual.conv1.",),
                    lr_factors={"text_encoder.": 0.0},
                ),
            ]

        def enter_stage(self, stage):
            import logging

            logging.getLogger("plugins.toy").info(f"toy model enters stage {stage.name}")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


def test_freeze_for_stage_prefixes():
    model = Tiny()
    trainable, frozen = freeze_for_stage(model, Stage("s", trainable=("a.", "b.")))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "a.weight",
        "a.bias",
        "b.weight",
        "b.bias",
    }
    assert (trainable, frozen) == (8 + 6, 3)
    freeze_for_stage(model, Stage("s", frozen=("b.",)))
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"b.weight", "b.bias"}
    with pytest.raises(ValueError, match="match no parameter"):
        freeze_for_stage(model, Stage("s", frozen=("c.",)))


def test_stage_declaration_errors():
    with pytest.raises(ValueError, match="plain folder name"):
        Stage("a/b")
    with pytest.raises(ValueError, match="train_data"):
        Stage("a", train_data="cache")
    with pytest.raises(ValueError, match="KEY VALUE"):
        Stage("a", opts=("SOLVER.MAX_EPOCH",))


def test_lr_factors_and_frozen_parameters_stay_out_of_the_optimizer():
    model = Tiny()
    freeze_for_stage(model, Stage("s", frozen=("b.",)))
    params = [{"params": [p], "lr": 0.1} for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    scaled = apply_lr_factors(optimizer, model, {"head.": 5.0})
    assert scaled == {"head.": 2}
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.b.weight) not in in_optimizer and id(model.b.bias) not in in_optimizer
    lrs = {id(g["params"][0]): g["lr"] for g in optimizer.param_groups}
    assert lrs[id(model.head.weight)] == pytest.approx(0.5)
    assert lrs[id(model.a.weight)] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="match no trainable"):
        apply_lr_factors(optimizer, model, {"b.": 2.0})  # frozen: not in the optimizer
    mixed = torch.optim.SGD([{"params": [model.a.weight, model.head.weight]}], lr=0.1)
    with pytest.raises(ValueError, match="mixes"):
        apply_lr_factors(mixed, model, {"head.": 2.0})


def test_feature_train_set_shares_rows():
    images = torch.arange(6.0).view(3, 2)
    captions = torch.arange(10.0).view(5, 2) + 100
    data = FeatureTrainSet(
        {"img": images, "cap": captions},
        pids=[0, 0, 1, 1, 2],
        image_ids=[0, 0, 1, 2, 3],
        index={"img": [0, 0, 1, 2, 2]},
    )
    assert len(data) == 5 and data.num_classes == 3
    item = data[(1, 1234)]
    assert torch.equal(item["img"], images[0]) and torch.equal(item["cap"], captions[1])
    assert item["targets"] == 0 and item["image_ids"] == 0
    assert torch.equal(data[4]["img"], images[2])
    with pytest.raises(ValueError, match="gives"):
        FeatureTrainSet({"img": images}, pids=[0, 1], image_ids=[0, 1])


def test_cache_is_reused_and_rebuilt_when_its_fingerprint_changes(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.full((2,), float(len(calls)))}

    path = str(tmp_path / "cache.pth")
    first = load_or_build_cache(path, {"weights": "a", "data": "d"}, build)
    again = load_or_build_cache(path, {"weights": "a", "data": "d"}, build)
    assert len(calls) == 1 and torch.equal(first["x"], again["x"])
    rebuilt = load_or_build_cache(path, {"weights": "b", "data": "d"}, build)
    assert len(calls) == 2 and rebuilt["x"][0] == 2.0
    load_or_build_cache(path, {"weights": "b", "data": "e"}, build)
    assert len(calls) == 3


def test_tensor_fingerprint_sees_values_shapes_and_names():
    a = {"w": torch.zeros(2, 2)}
    assert tensor_fingerprint(a) == tensor_fingerprint({"w": torch.zeros(2, 2)})
    assert tensor_fingerprint(a) != tensor_fingerprint({"w": torch.zeros(4)})
    assert tensor_fingerprint(a) != tensor_fingerprint({"v": torch.zeros(2, 2)})
    b = torch.zeros(2, 2)
    b[1, 1] = 1e-6
    assert tensor_fingerprint(a) != tensor_fingerprint({"w": b})
    # 0-d integer buffers (BatchNorm's num_batches_tracked) hash too.
    count = {"n": torch.tensor(3, dtype=torch.long)}
    assert tensor_fingerprint(count) != tensor_fingerprint({"n": torch.tensor(4)})


def test_single_stage_models_declare_no_stages():
    cfg = build_config(os.path.join(ROOT, "configs/Demo/clip_sdm_rgb.yml"))
    assert model_stages(cfg) == []


def test_stage_config_applies_opts_and_sub_folder():
    cfg = build_config(
        os.path.join(ROOT, "configs/Demo/clip_sdm_rgb.yml"),
        ["MODEL.META_ARCHITECTURE", TOY, "OUTPUT_DIR", "out", "MODEL.WEIGHTS", "w.pth"],
    )
    first, second = model_stages(cfg)
    scfg = stage_config(cfg, first)
    assert scfg.OUTPUT_DIR == os.path.join("out", "first") and scfg.SOLVER.MAX_EPOCH == 2
    assert scfg.MODEL.WEIGHTS == "w.pth"
    later = stage_config(cfg, second, "w.pth")
    assert later.SOLVER.MAX_EPOCH == 1 and later.MODEL.WEIGHTS == ""
    assert later.MODEL.BACKBONE.PRETRAIN is False and later.MODEL.CLIP.WEIGHTS == ""


def _run(data_root, out_dir, *opts):
    cmd = [sys.executable, TRAIN_NET, "--extra-imports", "tests.test_stages", "--config-file"]
    cmd += [os.path.join(ROOT, "configs/Demo/clip_sdm_rgb.yml")]
    cmd += TINY + ["MODEL.META_ARCHITECTURE", TOY, "SOLVER.IMS_PER_BATCH", "4"]
    cmd += ["SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "1", "OUTPUT_DIR", str(out_dir)]
    env = dict(os.environ, FASTREID_DATASETS=data_root, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        cmd + list(opts), env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    return proc.returncode, proc.stdout + proc.stderr


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def two_stage_run(rgbt, tmp_path_factory):
    """The toy model's two stages trained once: (OUTPUT_DIR, training output)."""
    out = tmp_path_factory.mktemp("two_stages") / "out"
    code, log = _run(rgbt, out)
    assert code == 0, log[-4000:]
    return out, log


def test_two_stages_freeze_scale_and_chain(rgbt, two_stage_run):
    out, log = two_stage_run
    assert "Stage 1/2 'first': training" in log
    assert f"Stage 2/2 'second': training, starting from the previous stage's {out}" in log
    assert "toy model enters stage first" in log and "toy model enters stage second" in log
    first0 = _state(out / "first" / "model_0000.pth")
    first = _state(out / "first" / "model_final.pth")
    second = _state(out / "second" / "model_final.pth")
    text = [k for k in first if k.startswith("text_encoder.") and first[k].is_floating_point()]
    image = [k for k in first if k.startswith("image_encoder.")]
    # Stage 1 trains the text tower only.
    assert all(torch.equal(first0[k], first[k]) for k in image)
    assert any(not torch.equal(first0[k], first[k]) for k in text)
    # Stage 2 starts from stage 1's result: frozen conv1 and the text tower at lr x 0 keep it.
    for k in text + [k for k in image if k.startswith("image_encoder.visual.conv1.")]:
        assert torch.equal(first[k], second[k]), k
    assert any(not torch.equal(first[k], second[k]) for k in image)
    assert (out / "second" / "results.json").is_file() and (out / "first" / "stage.json").is_file()
    # The run's results are also where a single-stage run leaves them.
    assert (out / "results.json").read_bytes() == (out / "second" / "results.json").read_bytes()

    # A finished stage is not reused under another config.
    code, log = _run(rgbt, out, "SOLVER.BASE_LR", "0.5")
    assert code != 0
    assert "was trained with another config (SOLVER.BASE_LR" in log


def test_final_model_is_published_where_single_stage_runs_leave_it(rgbt, two_stage_run):
    out, log = two_stage_run
    published, last = out / "model_final.pth", out / "second" / "model_final.pth"
    assert published.is_file(), sorted(os.listdir(out))
    # A hard link to the last stage's file where the file system has them: no second copy.
    assert os.path.samefile(published, last)
    assert f"model_final.pth of the last stage linked to {published}" in log
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # The usual evaluation command, with the method's config, evaluates the trained model.
    results = (out / "results.json").read_bytes()
    code, evaluated = _run(rgbt, out, "--eval-only", "MODEL.WEIGHTS", str(published))
    assert code == 0, evaluated[-4000:]
    assert final_results(evaluated, "RGBTPEDES") == final_results(log, "RGBTPEDES")
    again = json.loads((out / "results.json").read_bytes())["RGBTPEDES"]
    assert again == pytest.approx(json.loads(results)["RGBTPEDES"])


def test_published_model_is_a_copy_where_hard_links_fail(tmp_path, monkeypatch):
    source = tmp_path / "stage" / "model_final.pth"
    source.parent.mkdir()
    source.write_bytes(b"PK\x03\x04 weights")
    (source.parent / "results.json").write_text("{}")

    def no_links(*args, **kwargs):
        raise PermissionError(errno.EPERM, "hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    publish_results(str(source.parent), str(tmp_path))
    published = tmp_path / "model_final.pth"
    assert published.read_bytes() == source.read_bytes()
    assert not os.path.samefile(published, source)
    assert sorted(os.listdir(tmp_path)) == ["model_final.pth", "results.json", "stage"]
