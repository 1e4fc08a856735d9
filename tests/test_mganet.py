"""MGANet: losses against hand-worked values, caption masks, frozen targets, ATF, configs, training."""

import math
import os
import re
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402

import projects.mganet  # noqa: E402, F401
from plugins.data.build import TextViews  # noqa: E402
from plugins.data.captions import COLOR_WORDS, MASK_TOKEN_ID, get_tokenizer  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.modeling.cross_modal import (  # noqa: E402
    CrossModalTransformer,
    MLMHead,
    masked_accuracy,
    masked_token_loss,
)
from projects.mganet.atf import AdaptiveTokenFusion  # noqa: E402
from projects.mganet.losses import (  # noqa: E402
    binding_loss,
    mab_loss,
    mutual_alignment_loss,
    semantic_consistency_loss,
)
from tests.fixtures_model import (  # noqa: E402
    CAPTIONS,
    ROOT,
    TINY_CLIP,
    build_model_from,
    caption_batch,
)
from tests.fixtures_text import write_rgbtpedes  # noqa: E402

# MGANet's captions keep CLIP's full context (the Demo configs shorten it).
FULL_CONTEXT = ["MODEL.CLIP.CONTEXT_LENGTH", "77", "INPUT.TEXT.CONTEXT_LENGTH", "77"]
TINY = TINY_CLIP + FULL_CONTEXT
MGANET_CONFIGS = [
    "configs/RGBTPEDES/mganet.yml",
    "configs/RGBTPEDES/mganet_ablation/baseline.yml",
    "configs/RGBTPEDES/mganet_ablation/mga.yml",
    "configs/RGBTPEDES/mganet_ablation/mla.yml",
    "configs/RGBTPEDES/mganet_ablation/mga_mla.yml",
    "configs/RGBTPEDES/mganet_fusion/add.yml",
    "configs/RGBTPEDES/mganet_fusion/cat.yml",
    "configs/Demo/mganet.yml",
    "configs/Demo/mganet_baseline.yml",
]
CAPTION = CAPTIONS[0]
ALL_VIEWS = ("mlm", "color_masked", "nocolor", "nocolor_mlm")


def unit(angle, norm=1.0):
    return [norm * math.cos(angle), norm * math.sin(angle)]


def nce_by_hand(query_angles, key_angles, tau):
    """-mean_i log softmax_j(cos(q_i - k_j) / tau)[i] for 2-D vectors given by their angles."""
    total = 0.0
    for i, q in enumerate(query_angles):
        logits = [math.cos(q - k) / tau for k in key_angles]
        total -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    return total / len(query_angles)


def build(config, *opts):
    return build_model_from(config, *FULL_CONTEXT, *opts)[1]


def make_batch(views=ALL_VIEWS):
    return caption_batch(views, thermal=True)


# ------------------------------------------------------------------ (a) losses by hand


def test_mab_loss_by_hand():
    a, b, c, d, tau = [0.0, 1.2], [0.3, 1.0], [0.5, 2.0], [0.1, 2.4], 0.5
    v = torch.tensor([unit(x, 3.0) for x in a], dtype=torch.float64)
    l1 = torch.tensor([unit(x, 0.5) for x in b], dtype=torch.float64)
    t = torch.tensor([unit(x, 2.0) for x in c], dtype=torch.float64)
    l3 = torch.tensor([unit(x) for x in d], dtype=torch.float64)
    align = nce_by_hand(a, b, tau) + nce_by_hand(b, a, tau)
    bind = nce_by_hand(c, d, tau) + nce_by_hand(d, c, tau)
    # Row 0 of the first term written out in full:
    row0 = -math.log(
        math.exp(math.cos(0.0 - 0.3) / tau)
        / (math.exp(math.cos(0.0 - 0.3) / tau) + math.exp(math.cos(0.0 - 1.0) / tau))
    )
    assert nce_by_hand([0.0], [0.3, 1.0], tau) == pytest.approx(row0)
    assert mutual_alignment_loss(v, l1, tau).item() == pytest.approx(align, rel=1e-10)
    assert binding_loss(t, l3, tau).item() == pytest.approx(bind, rel=1e-10)
    assert mab_loss(v, l1, t, l3, tau).item() == pytest.approx(align + bind, rel=1e-10)


def test_semantic_consistency_loss_by_hand():
    recon = torch.tensor([[unit(0.2), unit(0.7, 2.0), unit(1.5, 0.3)]], dtype=torch.float64)
    target = torch.tensor([[unit(0.0), unit(0.4, 5.0), unit(2.5)]], dtype=torch.float64)
    labels = torch.tensor([[0, 3, 9]])
    expected = 1.0 - (math.cos(0.7 - 0.4) + math.cos(1.5 - 2.5)) / 2
    assert semantic_consistency_loss(recon, target, labels).item() == pytest.approx(expected)
    nothing = recon.clone().requires_grad_()
    loss = semantic_consistency_loss(nothing, target, torch.zeros(1, 3, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad


def test_masked_token_loss_by_hand():
    logits = torch.tensor(
        [[[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]],
        dtype=torch.float64,
    )
    labels = torch.tensor([[0, 2, 0, 1]])
    ce1 = -math.log(math.exp(0.5) / (math.exp(1.0) + math.exp(-1.0) + math.exp(0.5)))
    ce3 = -math.log(math.exp(0.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(0.0)))
    assert masked_token_loss(logits, labels).item() == pytest.approx((ce1 + ce3) / 2)
    # Position 1 predicts 0 (wrong), position 3 predicts 0 (wrong): accuracy 0; then fix one.
    assert masked_accuracy(logits, labels).item() == 0.0
    assert masked_accuracy(logits, torch.tensor([[0, 2, 0, 0]])).item() == 0.0
    assert masked_accuracy(logits, torch.tensor([[0, 0, 0, 0]])).isnan()
    logits[0, 1, 2] = 9.0
    assert masked_accuracy(logits, labels).item() == 0.5
    empty = logits.clone().requires_grad_()
    loss = masked_token_loss(empty, torch.zeros(1, 4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and empty.grad is not None


# ------------------------------------------------------------------ (b) caption masks


def test_color_mask_covers_exactly_the_colour_words():
    tok = get_tokenizer()
    torch.manual_seed(0)
    out = TextViews(("color_masked", "nocolor_mlm", "mlm"))(CAPTION)
    text, masked, labels = out["text"], out["text_color_masked"], out["text_color_masked_labels"]
    chosen = labels != 0
    assert {tok.decode([int(i)]) for i in text[chosen]} == {"black", "red", "blue"}
    assert chosen.sum() == 3
    assert torch.equal(labels[chosen], text[chosen])
    assert (masked[chosen] == MASK_TOKEN_ID).all()
    assert torch.equal(masked[~chosen], text[~chosen])
    assert tok.decode(masked) == (
        "a woman with long <|mask|> hair wears a <|mask|> coat and <|mask|> jeans"
    )


@pytest.mark.parametrize("seed", range(5))
def test_no_colour_word_survives_in_l3(seed):
    tok = get_tokenizer()
    torch.manual_seed(seed)
    out = TextViews(("color_masked", "nocolor_mlm", "mlm"))(CAPTION)
    ids, labels = out["text_nocolor_mlm"], out["text_nocolor_mlm_labels"]
    assert (labels != 0).any()
    restored = torch.where(labels != 0, labels, ids)
    assert tok.decode(restored) == "a woman with long hair wears a coat and jeans"
    for decoded in (tok.decode(ids), tok.decode(restored)):
        assert not set(decoded.replace("<|mask|>", " ").split()) & COLOR_WORDS


# ------------------------------------------------------------------ (c) frozen parts


def test_binding_sends_no_gradient_to_text():
    g = torch.Generator().manual_seed(0)
    v, l1, t, l3 = (torch.randn(4, 8, generator=g, requires_grad=True) for _ in range(4))
    binding_loss(t, l3, 0.07).backward()
    assert l3.grad is None and t.grad.abs().sum() > 0
    mab_loss(v, l1, t, l3, 0.07).backward()
    assert l3.grad is None
    assert all(x.grad.abs().sum() > 0 for x in (v, l1, t))


def test_reconstruction_targets_get_no_gradient():
    g = torch.Generator().manual_seed(0)
    recon = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    target = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    labels = torch.tensor([[0, 4, 0, 7, 0], [0, 0, 9, 0, 0]])
    semantic_consistency_loss(recon, target, labels).backward()
    assert target.grad is None
    assert recon.grad[labels != 0].abs().sum() > 0
    assert recon.grad[labels == 0].abs().sum() == 0


@pytest.mark.parametrize("mla", [True, False])
def test_model_encodes_frozen_texts_without_graph(mla):
    model = build("configs/Demo/mganet.yml", "MODEL.MGANET.MLA", str(mla)).train()
    batch = make_batch()
    calls = []
    handle = model.text_encoder.register_forward_hook(
        lambda m, args, out: calls.append((args[0].cpu(), out[0].requires_grad))
    )
    model(batch)
    handle.remove()
    graph = {}
    for key in ("text", "text_nocolor", "text_mlm", "text_color_masked", "text_nocolor_mlm"):
        graph[key] = [g for ids, g in calls if torch.equal(ids, batch[key])]
    # VRT / TRT targets: the unmasked captions, only encoded for MLA, never with a graph.
    assert graph["text"] == ([False] if mla else [])
    assert graph["text_nocolor"] == ([False] if mla else [])
    assert graph["text_mlm"] == [True] and graph["text_color_masked"] == [True]
    # L3 needs a graph only for TRT; for MAB alone it is encoded without one.
    assert graph["text_nocolor_mlm"] == [mla]


# ------------------------------------------------------------------ (d) ATF


def test_atf_is_convex_combination_plus_enhancement():
    torch.manual_seed(0)
    atf = AdaptiveTokenFusion(16, hidden=8, dropout=0.1).eval()
    v, t = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    assert torch.allclose(atf(v, t), (v + t) / 2)  # untrained: Add's direction
    torch.nn.init.normal_(atf.weight_branch.weight, std=1.0)
    torch.nn.init.normal_(atf.weight_branch.bias, std=1.0)
    fused = atf(v, t)  # enhancement still zero
    w, enhancement = atf.weights_and_enhancement(v, t)
    assert enhancement.abs().max() == 0
    assert ((w > 0) & (w < 1)).all() and w.std() > 0.1
    assert torch.allclose(fused, w * v + (1 - w) * t, atol=1e-6)
    assert (fused >= torch.minimum(v, t) - 1e-6).all()
    assert (fused <= torch.maximum(v, t) + 1e-6).all()
    torch.nn.init.normal_(atf.enhance_branch.weight, std=1.0)
    w, enhancement = atf.weights_and_enhancement(v, t)
    assert enhancement.abs().min() > 0
    assert torch.allclose(atf(v, t), w * v + (1 - w) * t + enhancement, atol=1e-6)
    assert atf.mode == "atf" and atf.needs_rgb and atf.needs_thermal


# ------------------------------------------------------------------ shared layers


def test_cross_modal_transformer_shapes_and_padding():
    torch.manual_seed(0)
    cmt = CrossModalTransformer(32, 4, 2).eval()
    text, image = torch.randn(2, 6, 32), torch.randn(2, 9, 32)
    pad = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    out = cmt(text, image, pad)
    assert out.shape == (2, 6, 32)
    changed = text.clone()
    changed[0, 4:] += 10.0  # padded text positions must not influence the others
    assert torch.allclose(cmt(changed, image, pad)[0, :4], out[0, :4], atol=1e-5)
    assert not torch.allclose(cmt(text, image + 1.0, pad), out)
    assert MLMHead(32, 11)(out).shape == (2, 6, 11)


# ------------------------------------------------------------------ model


def test_full_model_trains_and_encodes():
    model = build("configs/Demo/mganet.yml").train()
    out = model(make_batch())
    assert set(out) == {"loss_sdm", "loss_mab", "loss_frt", "loss_vrt", "loss_trt"}
    assert all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    for name in ("frt", "vrt", "trt", "mlm"):
        grads = [p.grad for p in model.heads[name].parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert model.fusion.weight_branch.weight.grad.abs().sum() > 0
    assert model.fusion.enhance_branch.weight.grad.abs().sum() > 0
    model.eval()
    batch = make_batch()
    assert model({"text": batch["text"]}).shape == (4, 64)
    image = model({"images": batch["images"], "t_images": batch["t_images"]})
    assert torch.allclose(image, model.fusion(*model.image_tokens(batch)[:2])[:, 0])


def test_baseline_equals_clip_retrieval_with_masked_text():
    mganet = build("configs/Demo/mganet_baseline.yml").train()
    clip = build("configs/Demo/clip_sdm_add.yml", "MODEL.RETRIEVAL.MASKED_TEXT", "True").train()
    clip.load_state_dict(mganet.state_dict(), strict=True)
    batch = make_batch()
    a, b = mganet(batch), clip(batch)
    assert set(a) == set(b) == {"loss_sdm"}
    assert torch.equal(a["loss_sdm"], b["loss_sdm"])
    assert not hasattr(mganet, "heads")


def test_missing_views_name_the_setting():
    model = build("configs/Demo/mganet.yml").train()
    batch = make_batch(views=("mlm", "nocolor"))
    with pytest.raises(ValueError, match=r"INPUT\.TEXT\.VIEWS.*color_masked"):
        model(batch)
    baseline = build("configs/Demo/mganet_baseline.yml").train()
    assert baseline.required_views() == ["mlm"]
    assert set(baseline(make_batch(views=("mlm",)))) == {"loss_sdm"}


def test_configuration_errors():
    with pytest.raises(ValueError, match="MODEL.RETRIEVAL.FUSION"):
        build("configs/Demo/mganet.yml", "MODEL.RETRIEVAL.FUSION", "rgb")
    with pytest.raises(ValueError, match="MODEL.MGANET.FUSION"):
        build("configs/Demo/mganet.yml", "MODEL.MGANET.FUSION", "t")


def test_shared_reconstructor_and_branch_switches():
    separate = build("configs/Demo/mganet.yml")
    shared = build("configs/Demo/mganet.yml", "MODEL.MGANET.SHARE_CMT", "True")
    assert shared.heads["frt"] is shared.heads["vrt"] is shared.heads["trt"]
    assert separate.heads["frt"] is not separate.heads["vrt"]
    per_cmt = sum(p.numel() for p in separate.heads["frt"].parameters())
    total = sum(p.numel() for p in separate.parameters())
    assert total - sum(p.numel() for p in shared.parameters()) == 2 * per_cmt
    only_frt = build("configs/Demo/mganet.yml", "MODEL.MGANET.VRT_WEIGHT", "0.0")
    assert set(only_frt.heads) == {"frt", "trt", "mlm"}
    assert "loss_vrt" not in only_frt.train()(make_batch())


# ------------------------------------------------------------------ (f) configs


@pytest.mark.parametrize("config", MGANET_CONFIGS)
def test_config_builds(config):
    model = build(config)
    cfg = build_config(str(ROOT / config), TINY)
    assert type(model).__name__ == "MGANet"
    assert model.fusion.mode == cfg.MODEL.MGANET.FUSION
    assert hasattr(model, "heads") == cfg.MODEL.MGANET.MLA
    assert (model.mab_weight > 0) == cfg.MODEL.MGANET.MGA


def test_ablation_configs_change_only_flags():
    full = build_config(str(ROOT / "configs/RGBTPEDES/mganet.yml"))
    expected = {
        "mganet_ablation/baseline": (False, False, "add"),
        "mganet_ablation/mga": (True, False, "add"),
        "mganet_ablation/mla": (False, True, "add"),
        "mganet_ablation/mga_mla": (True, True, "add"),
        "mganet_fusion/add": (True, True, "add"),
        "mganet_fusion/cat": (True, True, "cat"),
    }
    assert (full.MODEL.MGANET.MGA, full.MODEL.MGANET.MLA, full.MODEL.MGANET.FUSION) == (
        True,
        True,
        "atf",
    )
    for name, (mga, mla, fusion) in expected.items():
        cfg = build_config(str(ROOT / f"configs/RGBTPEDES/{name}.yml"))
        assert (cfg.MODEL.MGANET.MGA, cfg.MODEL.MGANET.MLA, cfg.MODEL.MGANET.FUSION) == (
            mga,
            mla,
            fusion,
        )
        changed = cfg.clone()
        changed.defrost()
        changed.MODEL.MGANET = full.MODEL.MGANET.clone()
        changed.OUTPUT_DIR = full.OUTPUT_DIR
        assert changed.dump() == full.dump(), name
        assert cfg.OUTPUT_DIR != full.OUTPUT_DIR


def test_count_params_tool(capsys):
    from tools import count_params

    total, trainable, inference = count_params.main(
        ["--config-file", str(ROOT / "configs/Demo/mganet.yml"), "--num-classes", "7"] + TINY
    )
    assert (
        total == trainable == sum(p.numel() for p in build("configs/Demo/mganet.yml").parameters())
    )
    assert 0 < inference <= total
    assert "heads" in capsys.readouterr().out
    with_id = count_params.main(
        [
            "--config-file",
            str(ROOT / "configs/Demo/mganet.yml"),
            "--num-classes",
            "7",
            "MODEL.RETRIEVAL.ID_WEIGHT",
            "1.0",
        ]
        + TINY
    )[0]
    assert with_id - total == 7 * 64 + 7


# ------------------------------------------------------------------ (e) training end to end


def _results_line(text):
    lines = re.findall(r"Evaluation results for RGBTPEDES: (.*)", text)
    assert lines, text[-3000:]
    return lines[-1]


# Both command lines of tools/train_net.py run in one interpreter, one after the other: a fresh
# interpreter spends most of this test's time importing torch and fastreid.
_DRIVER = """
import runpy, sys
for argv in ({train!r}, {evaluate!r}):
    sys.argv = argv
    runpy.run_path("tools/train_net.py", run_name="__main__")
    print("{marker}", flush=True)
"""
_MARKER = "=== tools/train_net.py finished ==="


def test_train_then_eval_only(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    write_rgbtpedes(str(data))
    env = dict(os.environ, FASTREID_DATASETS=str(data), HF_HUB_OFFLINE="1")
    cmd = ["tools/train_net.py", "--config-file", "configs/Demo/mganet.yml"]
    common = ["OUTPUT_DIR", str(out), "DATALOADER.NUM_WORKERS", "0"]
    train = cmd + ["SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_EPOCH", "2", "TEST.EVAL_PERIOD", "2"]
    weights = out / "model_final.pth"
    evaluate = cmd + ["--eval-only", "MODEL.WEIGHTS", str(weights)]
    driver = _DRIVER.format(train=train + common, evaluate=evaluate + common, marker=_MARKER)
    proc = subprocess.run(
        [sys.executable, "-c", driver],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    train_log, eval_log, rest = proc.stdout.split(_MARKER)
    assert not rest.strip()
    assert weights.is_file()
    assert re.search(r"loss_frt: [0-9.]+", train_log) and re.search(r"loss_mab: [0-9.]+", train_log)
    trained = _results_line(train_log)
    assert "Loading checkpoint from" in eval_log and "Starting training" not in eval_log
    assert re.search(r"\|\s*subset\s*\|\s*queries\s*\|\s*R1", eval_log)
    r1 = re.search(r"R1 ([0-9.]+)", trained).group(1)
    assert re.search(rf"R1 {re.escape(r1)},", _results_line(eval_log))
    assert _results_line(eval_log) == trained
