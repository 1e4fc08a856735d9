"""IRRA: the masked caption feeds only IRR, the IRR loss by a plain loop, optimizer roles,
parameter counts against the papers, and cross-dataset ``--eval-only`` through train_net."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugins.engine.optimizer import build_plugin_optimizer  # noqa: E402
from plugins.modeling.losses import sdm_loss  # noqa: E402
from tests.fixtures_model import IRRA_HEADS, ROOT, SHORT_RUN, build_model_from, caption_batch  # noqa: E402
from tests.fixtures_text import write_cuhkpedes, write_icfgpedes, write_rstpreid  # noqa: E402
from tests.test_train_net import final_results, train_net  # noqa: E402


def build(config="configs/CUHKPEDES/irra.yml", *opts):
    return build_model_from(config, *IRRA_HEADS, *opts)


def test_masked_caption_feeds_only_irr():
    _, irra = build()
    _, baseline = build("configs/CUHKPEDES/clip_sdm.yml")
    batch = caption_batch()
    out = irra.losses(batch)
    assert set(out) == {"loss_sdm", "loss_id", "loss_irr"}
    # The shared parts are built first, so both models hold the same encoders and classifier.
    reference = baseline.losses(batch)
    for key in ("loss_sdm", "loss_id"):
        torch.testing.assert_close(out[key], reference[key])

    image = irra.image_tokens(batch)[2][:, 0]
    text = irra.text_tokens(batch["text"])[1]
    torch.testing.assert_close(out["loss_sdm"], sdm_loss(image, text, batch["targets"], 50.0))

    scrambled = dict(batch, text_mlm=batch["text_mlm"].flip(0))
    again = irra.losses(scrambled)
    for key in ("loss_sdm", "loss_id"):
        torch.testing.assert_close(again[key], out[key])
    assert not torch.allclose(again["loss_irr"], out["loss_irr"])


def test_irr_loss_against_a_plain_loop():
    _, model = build()
    batch = caption_batch(seed=1)
    image_tokens = model.image_tokens(batch)[2]
    loss = model.irr_loss(batch, image_tokens)

    tokens, _, padding = model.caption_features(batch["text_mlm"])
    logits = model.irr["mlm"](model.irr["cross"](tokens, image_tokens, padding))
    labels = batch["text_mlm_labels"]
    terms = []
    for b in range(labels.shape[0]):
        for pos in range(labels.shape[1]):
            if labels[b, pos] != 0:
                log_p = F.log_softmax(logits[b, pos].double(), dim=0)
                terms.append(-log_p[labels[b, pos]])
    assert terms, "the fixture masks no word"
    torch.testing.assert_close(loss.double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-5)


def test_irr_padding_takes_no_part():
    _, model = build()
    batch = caption_batch(seed=2)
    image_tokens = model.image_tokens(batch)[2]
    tokens, _, padding = model.caption_features(batch["text_mlm"])
    assert padding.any()
    noisy = tokens.masked_fill(padding[..., None], 7.0)
    cross = model.irr["cross"]
    clean = cross(tokens, image_tokens, padding)[~padding]
    torch.testing.assert_close(cross(noisy, image_tokens, padding)[~padding], clean)


def test_irr_gradients_reach_both_encoders_and_are_finite():
    _, model = build()
    loss = model.losses(caption_batch())["loss_irr"]
    loss.backward()
    for prefix in ("irr.cross.cross_attn.", "irr.mlm.fc.", "image_encoder.", "text_encoder."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), prefix
        assert all(torch.isfinite(g).all() for g in grads if g is not None), prefix
    assert model.classifier.weight.grad is None  # IRR does not touch the classifier


def test_configuration_errors_name_the_setting():
    with pytest.raises(ValueError, match="MASKED_TEXT"):
        build("configs/CUHKPEDES/irra.yml", "MODEL.RETRIEVAL.MASKED_TEXT", "True")
    _, model = build()
    batch = caption_batch()
    del batch["text_mlm"]
    with pytest.raises(ValueError, match="INPUT.TEXT.VIEWS"):
        model.losses(batch)


def test_evaluation_model_has_no_classifier_or_irr_layers():
    _, model = build("configs/CUHKPEDES/irra.yml", "MODEL.TRAINING_HEADS", "False")
    names = [n for n, _ in model.named_parameters()]
    assert names and not [n for n in names if n.startswith(("classifier.", "irr."))]


def test_irra_optimizer_roles():
    cfg, model = build("configs/CUHKPEDES/irra.yml", "SOLVER.BASE_LR", "1e-5")
    optimizer, _ = build_plugin_optimizer(cfg, model)
    lr, decay = {}, {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lr[names[id(p)]], decay[names[id(p)]] = group["lr"], group["weight_decay"]
    expect = {
        "irr.cross.cross_attn.in_proj_weight": (5e-5, 4e-5),
        "irr.cross.cross_attn.in_proj_bias": (2e-5, 0.0),
        "irr.cross.blocks.0.mlp.c_fc.weight": (5e-5, 4e-5),
        "irr.cross.ln_pre_text.weight": (1e-5, 4e-5),
        "irr.cross.ln_post.bias": (2e-5, 0.0),
        "irr.mlm.fc.weight": (5e-5, 4e-5),
        "irr.mlm.fc.bias": (5e-5, 0.0),
        "classifier.weight": (5e-5, 4e-5),
    }
    for name, (want_lr, want_decay) in expect.items():
        assert lr[name] == pytest.approx(want_lr), name
        assert decay[name] == pytest.approx(want_decay), name


@pytest.mark.parametrize(
    "config, arch, paper",
    [("configs/CUHKPEDES/clip_sdm.yml", "CLIPRetrieval", 155.26), ("configs/CUHKPEDES/irra.yml", "IRRA", 194.54)],
)  # fmt: skip
def test_full_size_parameter_counts_match_the_papers(config, arch, paper, capsys):
    from tools.count_params import main

    total, _, _ = main(["--config-file", str(ROOT / config), "--num-classes", "11003"])
    printed = capsys.readouterr().out
    assert arch in printed
    assert round(total / 1e6, 2) == paper
    assert f"paper: {paper:.2f}M" in printed and "ours +0.00M" in printed


def test_cuhkpedes_checkpoint_evaluates_on_other_datasets(tmp_path):
    data = tmp_path / "data"
    write_cuhkpedes(str(data))
    write_icfgpedes(str(data))
    write_rstpreid(str(data))
    out = tmp_path / "train"
    trained = train_net(
        "configs/Demo/irra.yml",
        str(data),
        *SHORT_RUN,
        "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert "loss_irr" in trained
    assert "mlm_acc" in (out / "metrics.json").read_text()
    on_train_set = final_results(trained, "CUHKPEDES")
    weights = str(out / "model_final.pth")
    assert {"classifier.weight", "irr.mlm.fc.weight"} <= set(
        torch.load(weights, map_location="cpu")["model"]
    )
    evaluated = train_net(
        "configs/Demo/irra.yml",
        str(data),
        "DATASETS.TESTS", '("CUHKPEDES", "ICFGPEDES", "RSTPReid")',
        "MODEL.WEIGHTS", weights,
        "OUTPUT_DIR", str(tmp_path / "eval"),
        eval_only=True,
    )  # fmt: skip
    assert final_results(evaluated, "CUHKPEDES") == on_train_set
    assert "ms per query caption" in evaluated and "ms per gallery item" in evaluated
    for name in ("ICFGPEDES", "RSTPReid"):
        assert {"R1", "mAP"} <= set(final_results(evaluated, name))
