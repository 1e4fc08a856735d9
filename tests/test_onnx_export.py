"""ONNX export of the retrieval encoders: onnxruntime equals torch, dynamic batch and caption
length, RGB + thermal inputs, ``tools/export_onnx.py`` files and errors."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from plugins.data.captions import EOT_TOKEN_ID, SOT_TOKEN_ID, tokenize_batch
from plugins.engine import build_config
from plugins.engine.checkpoint import Checkpointer
from plugins.search.onnx_encoders import (
    OnnxEncoders,
    compare_with_torch,
    export_encoders,
    trim_token_ids,
)
from tests.fixtures_model import CAPTIONS, ROOT, TINY_CLIP, build_model_from

EXPORT_ONNX = os.path.join(ROOT, "tools", "export_onnx.py")
TIPR = "configs/Demo/tipr_clip_sdm.yml"  # tiny-vit CLIPRetrieval, context length 48
RGBT = "configs/Demo/mganet.yml"
TOL = 1e-4  # relative to the largest |torch feature|, as tools/export_onnx.py checks


def export_onnx(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, EXPORT_ONNX, *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def load_tool():
    spec = importlib.util.spec_from_file_location("export_onnx", EXPORT_ONNX)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def eval_model(config, weights):
    """The model of ``config`` built for evaluation and loaded from ``weights``, as the tool does."""
    cfg = build_config(str(ROOT / config), TINY_CLIP + ["MODEL.TRAINING_HEADS", "False"])
    from fastreid.modeling.meta_arch import build_model

    model = build_model(cfg)
    Checkpointer(model).load(str(weights), strict=True, evaluation=True)
    return model.eval()


@pytest.fixture(scope="module")
def tipr_export(tmp_path_factory):
    """A trained-layout checkpoint (identity classifier included) exported by the CLI."""
    tmp = tmp_path_factory.mktemp("onnx_tipr")
    _, model = build_model_from(TIPR, "MODEL.HEADS.NUM_CLASSES", "3")
    weights = tmp / "model_final.pth"
    torch.save({"model": model.state_dict(), "epoch": 0}, weights)
    out = tmp / "onnx"
    # --out after the KEY VALUE overrides, as the usage line writes it.
    proc = export_onnx(
        "--config-file", ROOT / TIPR, *TINY_CLIP, "MODEL.WEIGHTS", weights, "--out", out
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    return {"weights": weights, "out": out, "stdout": proc.stdout}


def test_cli_writes_files_and_manifest(tipr_export):
    out = tipr_export["out"]
    for name in ("image_encoder.onnx", "text_encoder.onnx", "onnx.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "onnx.json").read_text())
    expected_sha = hashlib.sha256(tipr_export["weights"].read_bytes()).hexdigest()
    assert manifest["weights_sha256"] == expected_sha
    assert manifest["meta_architecture"] == "CLIPRetrieval"
    assert manifest["image_inputs"] == ["images"]
    assert manifest["image_size"] == [64, 32]
    assert manifest["context_length"] == 48
    assert manifest["embed_dim"] == 64
    assert manifest["passed"] is True
    assert "META_ARCHITECTURE: CLIPRetrieval" in manifest["config"]
    for name in ("image", "text"):
        diff = manifest["differences"][name]
        assert diff["max_abs_diff"] < TOL * diff["scale"], (name, diff)
    # the padded batch, the trimmed batch and each caption at its own length were compared
    assert any(c.startswith("padded (3, 48)") for c in manifest["differences"]["text"]["checked"])
    assert sum("one caption" in c for c in manifest["differences"]["text"]["checked"]) == 3
    stdout = tipr_export["stdout"]
    assert "image encoder: max |onnxruntime - torch| = " in stdout
    assert "text encoder: max |onnxruntime - torch| = " in stdout


def test_onnxruntime_matches_torch_dynamic_batch_and_length(tipr_export):
    model = eval_model(TIPR, tipr_export["weights"])
    enc = OnnxEncoders(str(tipr_export["out"]), device="cpu", threads=1)
    assert enc.image_inputs == ("images",)
    assert enc.image_size == (64, 32) and enc.context_length == 48 and enc.embed_dim == 64

    torch.manual_seed(1)
    images = torch.rand(5, 3, 64, 32) * 255  # a batch size the export never saw
    ref = model.encode_image({"images": images}).numpy()
    out = enc.encode_images(images)  # a Tensor is accepted as well as an array
    print("image max abs diff", np.abs(out - ref).max())
    assert out.shape == (5, 64)
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL * np.abs(ref).max())

    padded = tokenize_batch(CAPTIONS + [""], 48)  # "" is SOT, EOT: the shortest caption, L = 2
    lengths = set()
    for row in padded:
        ids = trim_token_ids(row[None])
        lengths.add(ids.shape[1])
        ref = model.encode_text(ids).numpy()
        out = enc.encode_text(ids.numpy())
        print(f"text L={ids.shape[1]} max abs diff", np.abs(out - ref).max())
        np.testing.assert_allclose(out, ref, rtol=0, atol=TOL * np.abs(ref).max())
        # causal attention: padding after EOT changes nothing, in the exported graph too
        np.testing.assert_allclose(out, enc.encode_text(row[None]), rtol=0, atol=1e-5)
    assert lengths == {2, 11, 13, 15}, lengths  # four own lengths, none the padded 48
    # trimmed ids equal the padded ones up to their own length
    assert trim_token_ids(padded[-1:]).tolist() == [[SOT_TOKEN_ID, EOT_TOKEN_ID]]
    np.testing.assert_allclose(
        enc.encode_captions(CAPTIONS), model.encode_text(padded[:-1]).numpy(), rtol=0, atol=1e-5
    )


def test_onnx_encoders_reject_bad_inputs(tipr_export):
    enc = OnnxEncoders(str(tipr_export["out"]), device="cpu", threads=1)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 32\).*INPUT.SIZE_TEST"):
        enc.encode_images(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="takes only images; t_images given"):
        enc.encode_images(np.zeros((1, 3, 64, 32)), t_images=np.zeros((1, 3, 64, 32)))
    with pytest.raises(ValueError, match="2 <= L <= 48"):
        enc.encode_text(np.zeros((1, 49), np.int64))
    with pytest.raises(FileNotFoundError, match="tools/export_onnx.py"):
        OnnxEncoders(str(tipr_export["out"] / "missing"))


def test_bad_weights_path_is_one_line_error(tmp_path):
    missing = tmp_path / "nope.pth"
    proc = export_onnx(
        "--config-file", ROOT / TIPR, "MODEL.WEIGHTS", missing, "--out", tmp_path / "onnx"
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: MODEL.WEIGHTS {missing}: no such file (pass a model_*.pth that training wrote)."
    ]
    assert not (tmp_path / "onnx").exists()


def test_tolerance_check_is_relative_to_feature_scale(capsys):
    check = load_tool().check
    stats = {"max_abs_diff": 3e-4, "scale": 2.0, "checked": ["batch 1"]}
    assert not check("image", stats, 1e-4)  # limit 2e-4
    assert check("image", stats, 2e-4)
    assert "image encoder: max |onnxruntime - torch| = 0.0003" in capsys.readouterr().out


def test_difference_above_tolerance_exits_1(tipr_export, tmp_path):
    # fp32 kernels differ by ~1e-7 relative: no export is within 1e-12 of torch
    argv = ["--config-file", str(ROOT / TIPR), "MODEL.WEIGHTS", str(tipr_export["weights"])]
    with pytest.raises(SystemExit, match="differs from torch by more than 1e-12") as exit_info:
        load_tool().main(argv + ["--out", str(tmp_path), "--tolerance", "1e-12"])
    assert exit_info.value.code != 0
    manifest = json.loads((tmp_path / "onnx.json").read_text())
    assert manifest["passed"] is False and manifest["tolerance"] == 1e-12


def test_rgbt_mganet_export(tmp_path):
    """MGANet (ATF on RGB + thermal): both inputs, in the right order, match torch."""
    cfg, model = build_model_from(RGBT, "MODEL.TRAINING_HEADS", "False")
    # ATF starts symmetric, (V + T) / 2; random branch weights make swapped inputs visible.
    torch.manual_seed(2)
    for layer in (model.fusion.weight_branch, model.fusion.enhance_branch):
        nn.init.normal_(layer.weight, std=0.2)
    model.eval()
    info = export_encoders(model, str(tmp_path), cfg.INPUT.SIZE_TEST)
    assert info["image_inputs"] == ["images", "t_images"]
    enc = OnnxEncoders(str(tmp_path), device="cpu", threads=1)
    assert enc.image_inputs == ("images", "t_images")

    diffs = compare_with_torch(model, enc)
    print("MGANet max abs diffs", {k: v["max_abs_diff"] for k, v in diffs.items()})
    for name, diff in diffs.items():
        assert diff["max_abs_diff"] < TOL * diff["scale"], (name, diff)

    torch.manual_seed(3)
    rgb, thermal = (torch.rand(2, 3, 64, 32) * 255 for _ in range(2))
    ref = model.encode_image({"images": rgb, "t_images": thermal}).numpy()
    out = enc.encode_images(rgb.numpy(), t_images=thermal.numpy())
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL * np.abs(ref).max())
    swapped = enc.encode_images(thermal.numpy(), t_images=rgb.numpy())
    assert np.abs(swapped - ref).max() > 100 * TOL * np.abs(ref).max()
    with pytest.raises(ValueError, match="takes images and t_images; t_images was not given"):
        enc.encode_images(rgb.numpy())


def test_build_index_encodes_the_gallery_with_the_onnx_export(tipr_export, tmp_path):
    from plugins.search.engine import SearchError, TextSearcher, build_index
    from tests.fixtures_text import write_image

    gallery = tmp_path / "gallery"
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90)]):
        write_image(str(gallery / f"p{i}.jpg"), colour, size=(16, 32))
    opts = TINY_CLIP + ["MODEL.WEIGHTS", str(tipr_export["weights"])]
    lines = []
    build_index(str(ROOT / TIPR), opts, str(gallery), str(tmp_path / "torch"), echo=lines.append)
    build_index(str(ROOT / TIPR), opts, str(gallery), str(tmp_path / "onnx"),
                onnx=str(tipr_export["out"]), echo=lines.append)  # fmt: skip
    assert any("onnxruntime" in line for line in lines)
    query = "a man in a red shirt"
    by_torch = TextSearcher(str(tmp_path / "torch")).search(query, top_k=4)
    by_onnx = TextSearcher(str(tmp_path / "onnx")).search(query, top_k=4)
    assert [r["index"] for r in by_onnx] == [r["index"] for r in by_torch]
    np.testing.assert_allclose(
        [r["score"] for r in by_onnx], [r["score"] for r in by_torch], atol=1e-5
    )
    # An export of other weights is refused.
    _, other = build_model_from(TIPR, "MODEL.HEADS.NUM_CLASSES", "3")
    other_weights = tmp_path / "other.pth"
    torch.save({"model": other.state_dict(), "epoch": 1}, other_weights)
    with pytest.raises(SearchError, match="exported from other weights"):
        build_index(str(ROOT / TIPR), TINY_CLIP + ["MODEL.WEIGHTS", str(other_weights)],
                    str(gallery), str(tmp_path / "bad"), onnx=str(tipr_export["out"]))  # fmt: skip


# --- an export is checked file by file ---------------------------------------------------------
def copy_export(tipr_export, folder):
    import shutil

    shutil.copytree(tipr_export["out"], folder)
    return folder


def write_gallery(folder):
    from tests.fixtures_text import write_image

    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        write_image(str(folder / f"p{i}.jpg"), colour, size=(16, 32))
    return str(folder)


def build_with_onnx(tipr_export, onnx_dir, tmp_path, capsys):
    """``tools/build_index.py --onnx onnx_dir`` in this process: (status, stderr lines)."""
    spec = importlib.util.spec_from_file_location("build_index", ROOT / "tools" / "build_index.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    capsys.readouterr()
    status = tool.main(
        ["--config-file", str(ROOT / TIPR), *TINY_CLIP, "MODEL.WEIGHTS", str(tipr_export["weights"]),
         "--gallery", write_gallery(tmp_path / "gallery"), "--out", str(tmp_path / "index"),
         "--onnx", str(onnx_dir), "--num-workers", "0"]
    )  # fmt: skip
    return status, capsys.readouterr().err.strip().splitlines()


def test_manifest_records_each_file_and_other_files_are_refused(tipr_export, tmp_path, capsys):
    from plugins.search.engine import SearchError, build_index

    manifest = json.loads((tipr_export["out"] / "onnx.json").read_text())
    assert set(manifest["files"]) == {"image_encoder.onnx", "text_encoder.onnx"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((tipr_export["out"] / name).read_bytes()).hexdigest() == sha
    # Model B's graphs beside model A's onnx.json (which names A's weights).
    _, other = build_model_from(TIPR, "MODEL.HEADS.NUM_CLASSES", "3")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02)
    other.eval()
    mixed = copy_export(tipr_export, tmp_path / "mixed")
    export_encoders(other, str(tmp_path / "b"), (64, 32))
    (tmp_path / "b" / "text_encoder.onnx").replace(mixed / "text_encoder.onnx")
    with pytest.raises(ValueError, match="text_encoder.onnx is not the file onnx.json records"):
        OnnxEncoders(str(mixed), device="cpu")
    with pytest.raises(SearchError, match="text_encoder.onnx is not the file onnx.json records"):
        build_index(str(ROOT / TIPR), TINY_CLIP + ["MODEL.WEIGHTS", str(tipr_export["weights"])],
                    write_gallery(tmp_path / "g"), str(tmp_path / "i"), onnx=str(mixed))  # fmt: skip


def test_an_export_that_failed_its_check_is_refused(tipr_export, tmp_path, capsys):
    failed = copy_export(tipr_export, tmp_path / "failed")
    manifest = json.loads((failed / "onnx.json").read_text())
    manifest["passed"] = False
    (failed / "onnx.json").write_text(json.dumps(manifest))
    status, lines = build_with_onnx(tipr_export, failed, tmp_path, capsys)
    assert status == 1 and len(lines) == 1, lines
    assert lines[0] == (
        f"error: --onnx {failed} failed its own comparison with torch when it was exported "
        "(onnx.json says passed: false): export again with tools/export_onnx.py until it "
        "passes, or leave out --onnx."
    )
    assert not (tmp_path / "index").exists()


def test_an_interrupted_export_leaves_the_previous_one(tipr_export, tmp_path, monkeypatch, capsys):
    out = copy_export(tipr_export, tmp_path / "onnx")
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    tool = load_tool()

    def interrupted(model, folder, image_size):
        with open(os.path.join(folder, "image_encoder.onnx"), "wb") as f:
            f.write(b"half a graph")
        raise KeyboardInterrupt

    monkeypatch.setattr(tool, "export_encoders", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tool.main(["--config-file", str(ROOT / TIPR), *TINY_CLIP,
                   "MODEL.WEIGHTS", str(tipr_export["weights"]), "--out", str(out)])  # fmt: skip
    assert {n: (out / n).read_bytes() for n in os.listdir(out) if n != ".lock"} == before
    assert sorted(os.listdir(tmp_path)) == ["onnx"]  # no staging folder left
    status, lines = build_with_onnx(tipr_export, out, tmp_path, capsys)
    assert status == 0, lines


def test_a_missing_manifest_or_a_truncated_graph_is_one_line(tipr_export, tmp_path, capsys):
    bare = copy_export(tipr_export, tmp_path / "bare")
    os.remove(bare / "onnx.json")
    status, lines = build_with_onnx(tipr_export, bare, tmp_path, capsys)
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --onnx {bare}: {bare / 'onnx.json'}: no such file, so ")
    assert lines[0].endswith("export the model again with tools/export_onnx.py.")

    truncated = copy_export(tipr_export, tmp_path / "truncated")
    data = (truncated / "image_encoder.onnx").read_bytes()
    (truncated / "image_encoder.onnx").write_bytes(data[: len(data) // 2])
    status, lines = build_with_onnx(tipr_export, truncated, tmp_path, capsys)
    assert status == 1 and len(lines) == 1, lines
    assert "image_encoder.onnx is not the file onnx.json records (its sha256 differs" in lines[0]
    # Without onnx.json, onnxruntime's own refusal becomes one line too.
    os.remove(truncated / "onnx.json")
    with pytest.raises(
        ValueError, match=r"image_encoder.onnx cannot be loaded by onnxruntime \("
    ) as e:
        OnnxEncoders(str(truncated), device="cpu")
    assert "\n" not in str(e.value) and "export the model again" in str(e.value)
