"""The synthetic CLIPs in weights/synthetic-clip: files, loading through the config path, the
first steps of the command that made them, and their zero-shot retrieval."""

import glob
import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from plugins import synthetic  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.evaluation.retrieval_evaluator import chance_r1  # noqa: E402
from plugins.evaluation.zero_shot import evaluate_zero_shot, zero_shot_config  # noqa: E402
from plugins.modeling.clip import build_clip_model, build_clip_model_from_cfg  # noqa: E402
from plugins.search.folders import sha256_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "synthetic-clip"
RECORDS = sorted(WEIGHTS.glob("*.json"))
# The configs that fine-tune from each file (every Demo text config starts from one of them).
DEMO_TEXT_CONFIGS = {
    "tiny-rn": ["mganet", "mganet_baseline", "clip_sdm_add", "clip_sdm_rgb"],
    "tiny-vit": ["tipr_clip_sdm", "irra", "fmfa", "corl"],
}
MAX_TOTAL_BYTES = 20 * 1024 * 1024


def record_of(arch):
    path = WEIGHTS / f"{arch}.json"
    with open(path) as f:
        return json.load(f)


def pretrain_tool():
    spec = importlib.util.spec_from_file_location(
        "pretrain_synthetic_clip", ROOT / "tools" / "pretrain_synthetic_clip.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_file_has_its_record_and_the_files_are_small():
    files = sorted(WEIGHTS.glob("*.safetensors"))
    assert [f.stem for f in files] == sorted(DEMO_TEXT_CONFIGS)
    assert [r.stem for r in RECORDS] == [f.stem for f in files]
    assert sum(f.stat().st_size for f in files) <= MAX_TOTAL_BYTES
    for path in files:
        record = record_of(path.stem)
        assert record["file"] == path.name and record["architecture"] == path.stem
        assert record["sha256"] == sha256_file(path), f"{path} is not the file its record describes"
        assert record["command"].startswith("python tools/pretrain_synthetic_clip.py")


@pytest.mark.parametrize("arch", sorted(DEMO_TEXT_CONFIGS))
def test_files_are_fp16_open_clip_state_dicts(arch):
    with safe_open(str(WEIGHTS / f"{arch}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["architecture"] == arch and meta["command"] == record_of(arch)["command"]
    floats = [t for t in tensors.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    # Exactly the tensors of open_clip's CLIP of that architecture, logit scale included.
    args = record_of(arch)["args"]
    model = build_clip_model(
        arch, tuple(args["size"]), resnet_last_stride=args["resnet_last_stride"]
    )
    assert set(tensors) == set(model.state_dict()) and "logit_scale" in tensors


@pytest.mark.parametrize(
    "arch,config", [(a, c) for a, configs in DEMO_TEXT_CONFIGS.items() for c in configs]
)
def test_demo_configs_start_from_the_synthetic_clip(arch, config):
    cfg = build_config(str(ROOT / "configs" / "Demo" / f"{config}.yml"))
    assert cfg.MODEL.BACKBONE.PRETRAIN and cfg.MODEL.CLIP.NAME == arch
    assert cfg.MODEL.CLIP.WEIGHTS == f"weights/synthetic-clip/{arch}.safetensors"


@pytest.mark.parametrize("arch,config", [("tiny-rn", "mganet"), ("tiny-vit", "tipr_clip_sdm")])
def test_weights_load_through_the_config_path(arch, config):
    cfg = build_config(str(ROOT / "configs" / "Demo" / f"{config}.yml"), ["MODEL.DEVICE", "cpu"])
    path = ROOT / cfg.MODEL.CLIP.WEIGHTS
    assert sha256_file(path) == record_of(arch)["sha256"]
    model = build_clip_model_from_cfg(cfg)
    state = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            stored = f.get_tensor(key)
            loaded = state[key]
            assert stored.dtype in (torch.float16, torch.int64), key
            if key.endswith("positional_embedding") and key.startswith("visual."):
                # Stored on a square grid with repeated columns: the resize gives the trained
                # (h, w) grid back exactly.
                h, w = model.visual.grid_size
                side = int((stored.shape[0] - 1) ** 0.5)
                grid = stored[1:].float().reshape(side, side, -1)
                grid = grid[:: side // h, :: side // w].reshape(h * w, -1)
                stored = torch.cat([stored[:1].float(), grid])
            if key == "positional_embedding":  # CLIP's 77 rows; the config keeps the first ones
                assert stored.shape[0] == 77
                stored = stored[: cfg.MODEL.CLIP.CONTEXT_LENGTH]
            if key == "token_embedding.weight":
                assert loaded.shape[0] == stored.shape[0] == 49409
            if not stored.is_floating_point():  # batch norms' num_batches_tracked
                assert torch.equal(loaded, stored), key
                continue
            assert loaded.dtype == torch.float32, key  # upcast on load
            assert torch.equal(loaded, stored.float().reshape(loaded.shape)), key


def test_configs_find_the_files_from_another_folder(tmp_path, monkeypatch):
    """The configs name the files relative to the repository; a run from elsewhere finds them,
    and a relative path that is in neither place is still a missing file."""
    from plugins.modeling.clip import CLIPWeightsError, resolve_clip_weights

    monkeypatch.chdir(tmp_path)
    found = resolve_clip_weights("weights/synthetic-clip/tiny-rn.safetensors", "tiny-rn")
    assert Path(found) == WEIGHTS / "tiny-rn.safetensors"
    with pytest.raises(CLIPWeightsError, match="no such file"):
        resolve_clip_weights("weights/synthetic-clip/missing.safetensors", "tiny-rn")


@pytest.mark.parametrize("arch", sorted(DEMO_TEXT_CONFIGS))
def test_pretraining_reproduces_its_first_steps(arch):
    """The committed command's first steps, rerun here, give the recorded losses and sums."""
    record = record_of(arch)
    tool = pretrain_tool()
    argv = ["--out", "unused.safetensors"]
    for key, value in record["args"].items():
        values = value if isinstance(value, list) else [value]
        argv += ["--" + key.replace("_", "-")] + [str(v) for v in values]
    args = tool.parse_args(argv)
    assert tool.command_line(args).replace("unused.safetensors", "") == record["command"].replace(
        f"weights/synthetic-clip/{arch}.safetensors", ""
    )
    expected = record["first_steps"]
    threads = torch.get_num_threads()
    torch.set_num_threads(expected["threads"])  # the float summation order of the recording
    try:
        got = tool.pretrain(args, stop_after=expected["steps"], log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    got = got["first_steps"]
    assert got["losses"] == pytest.approx(expected["losses"], rel=1e-5, abs=1e-5)
    assert got["logit_scale"] == pytest.approx(expected["logit_scale"], rel=1e-6)
    assert got["param_sum"] == pytest.approx(expected["param_sum"], rel=1e-6)
    # Adam's first steps move every weight by about +-lr: the signed sum follows the gradients.
    assert got["update_sum"] == pytest.approx(expected["update_sum"], rel=1e-3, abs=1e-6)


@pytest.fixture(scope="module")
def small_rgbt(tmp_path_factory):
    """A small synthetic RGBT-PEDES set (60 identities, 18 in test) from another data seed."""
    root = tmp_path_factory.mktemp("rgbt_small")
    synthetic.write_rgbtpedes(root, 60, seed=11)
    return str(root)


def test_zero_shot_of_the_synthetic_clip_is_far_above_chance(small_rgbt, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTREID_DATASETS", small_rgbt)
    monkeypatch.chdir(ROOT)
    opts = ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "zs")]
    cfg = build_config(str(ROOT / "configs" / "Demo" / "mganet.yml"), opts)
    zcfg = zero_shot_config(cfg)
    assert zcfg.MODEL.META_ARCHITECTURE == "CLIPRetrieval" and zcfg.MODEL.RETRIEVAL.FUSION == "add"
    from plugins.data.build import build_text_dataset

    chance = chance_r1(build_text_dataset(cfg, "RGBTPEDES").test)["all"]
    pretrained = evaluate_zero_shot(cfg)
    assert (tmp_path / "zs" / "results_zero_shot.json").is_file()
    random_cfg = build_config(
        str(ROOT / "configs" / "Demo" / "mganet.yml"),
        opts + ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.CLIP.WEIGHTS", ""],
    )
    random = evaluate_zero_shot(random_cfg, output_dir="")
    assert pretrained["R1"] > 3 * chance and pretrained["mAP"] > 2 * random["mAP"], (
        pretrained,
        random,
        chance,
    )


def test_weights_folder_is_tracked_not_ignored():
    """A clean clone needs the files: nothing in .gitignore may exclude them."""
    import subprocess

    files = [str(p.relative_to(ROOT)) for p in WEIGHTS.glob("*")]
    proc = subprocess.run(["git", "check-ignore", *files], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and not proc.stdout, proc.stdout  # 1: none is ignored


def test_records_list_the_run():
    for path in glob.glob(str(WEIGHTS / "*.json")):
        with open(path) as f:
            record = json.load(f)
        assert record["final_loss"] < record["first_steps"]["losses"][0]
        assert record["held_out_text_to_image"]["R1"] > 0
