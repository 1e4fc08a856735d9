"""IRRA: which caption the global losses see (masked, as IRRA's code, or unmasked), the IRR loss
by a plain loop, optimizer roles, parameter counts against the papers, and cross-dataset
``--eval-only`` through train_net."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugins.engine import build_config  # noqa: E402
from plugins.engine.optimizer import build_plugin_optimizer  # noqa: E402
from plugins.modeling.irra import GLOBAL_CAPTIONS  # noqa: E402
from plugins.modeling.losses import sdm_loss  # noqa: E402
from tests.fixtures_model import IRRA_HEADS, ROOT, SHORT_RUN, build_model_from, caption_batch  # noqa: E402
from tests.fixtures_text import write_cuhkpedes, write_icfgpedes, write_rstpreid  # noqa: E402
from tests.test_train_net import final_results, train_net  # noqa: E402

UNMASKED = ["MODEL.IRR.GLOBAL_CAPTION", "unmasked"]


def build(config="configs/CUHKPEDES/irra.yml", *opts):
    return build_model_from(config, *IRRA_HEADS, *opts)


def test_unmasked_global_caption_feeds_the_masked_one_only_to_irr():
    _, irra = build("configs/CUHKPEDES/irra.yml", *UNMASKED)
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
    torch.testing.assert_close(irra.training_features(batch)["text_global"], text)

    scrambled = dict(batch, text_mlm=batch["text_mlm"].flip(0))
    again = irra.losses(scrambled)
    for key in ("loss_sdm", "loss_id"):
        torch.testing.assert_close(again[key], out[key])
    assert not torch.allclose(again["loss_irr"], out["loss_irr"])
    # Scrambling the unmasked caption changes SDM and ID, not IRR.
    shuffled = irra.losses(dict(batch, text=batch["text"].flip(0)))
    for key in ("loss_sdm", "loss_id"):
        assert not torch.allclose(shuffled[key], out[key]), key
    torch.testing.assert_close(shuffled["loss_irr"], out["loss_irr"], rtol=0, atol=0)


def test_masked_global_caption_is_the_irr_branchs_caption():
    _, irra = build()  # configs/CUHKPEDES/irra.yml: GLOBAL_CAPTION masked
    assert irra.global_caption == "masked"
    batch = caption_batch()
    assert not torch.equal(batch["text_mlm"], batch["text"])
    out = irra.losses(batch)
    assert set(out) == {"loss_sdm", "loss_id", "loss_irr"}
    # Scrambling the unmasked caption changes no loss: every one reads the masked caption.
    scrambled = irra.losses(dict(batch, text=batch["text"].flip(0)))
    for key in out:
        torch.testing.assert_close(scrambled[key], out[key], rtol=0, atol=0)
    # The global text feature is the encoding of the masked token ids, the IRR branch's.
    feats = irra.training_features(batch)
    masked_global = irra.text_tokens(batch["text_mlm"])[1]
    torch.testing.assert_close(feats["text_global"], masked_global, rtol=0, atol=0)
    assert not torch.allclose(feats["text_global"], irra.text_tokens(batch["text"])[1])
    image = feats["image_tokens"][:, 0]
    torch.testing.assert_close(
        out["loss_sdm"], sdm_loss(image, masked_global, batch["targets"], 50.0)
    )
    # One encoding serves both branches: IRR's loss is the one of the masked caption encoded
    # on its own.
    torch.testing.assert_close(out["loss_irr"], irra.irr_loss(batch, feats["image_tokens"]))
    # Evaluation encodes the unmasked caption.
    irra.eval()
    torch.testing.assert_close(irra({"text": batch["text"]}), irra.text_tokens(batch["text"])[1])


def test_global_caption_needs_the_masked_view_and_a_known_value():
    _, model = build("configs/CUHKPEDES/irra.yml", "MODEL.IRR.WEIGHT", "0.0")
    batch = caption_batch()
    del batch["text_mlm"]
    with pytest.raises(ValueError, match="GLOBAL_CAPTION"):
        model.losses(batch)
    _, unmasked = build("configs/CUHKPEDES/irra.yml", "MODEL.IRR.WEIGHT", "0.0", *UNMASKED)
    assert set(unmasked.losses(batch)) == {"loss_sdm", "loss_id"}
    with pytest.raises(ValueError, match="MODEL.IRR.GLOBAL_CAPTION"):
        build("configs/CUHKPEDES/irra.yml", "MODEL.IRR.GLOBAL_CAPTION", "both")


@pytest.mark.parametrize(
    "config",
    ["configs/CUHKPEDES/irra.yml", "configs/ICFGPEDES/irra.yml", "configs/RSTPReid/irra.yml", "configs/Demo/irra.yml"],
)  # fmt: skip
def test_irra_configs_align_the_masked_caption_as_irras_code(config):
    cfg = build_config(str(ROOT / config))
    assert cfg.MODEL.META_ARCHITECTURE == "IRRA"
    assert cfg.MODEL.IRR.GLOBAL_CAPTION == "masked"
    assert list(cfg.INPUT.TEXT.VIEWS) == ["mlm"] and not cfg.MODEL.RETRIEVAL.MASKED_TEXT


def test_global_caption_key_leaves_mganet_as_its_paper():
    """MGANet's SDM aligns F^C with the randomly masked caption L2 (Eq. 1-3), whatever
    ``MODEL.IRR.GLOBAL_CAPTION`` says (an IRRA key, which MGANet does not read)."""
    import projects.mganet  # noqa: F401

    context = ["MODEL.CLIP.CONTEXT_LENGTH", "77", "INPUT.TEXT.CONTEXT_LENGTH", "77"]
    views = ("mlm", "color_masked", "nocolor", "nocolor_mlm")
    batch = caption_batch(views, thermal=True)
    losses = {}
    for value in GLOBAL_CAPTIONS:
        opts = [*context, "MODEL.IRR.GLOBAL_CAPTION", value]
        _, model = build_model_from("configs/RGBTPEDES/mganet.yml", *opts)
        torch.manual_seed(1)
        losses[value] = model.train().losses(batch)
    assert losses["masked"].keys() == losses["unmasked"].keys()
    for key in losses["masked"]:
        torch.testing.assert_close(losses["masked"][key], losses["unmasked"][key], rtol=0, atol=0)
    fused = model.image_tokens(batch)[2][:, 0]
    l2 = model.text_tokens(batch["text_mlm"])[1]
    want = sdm_loss(fused, l2, batch["targets"], model.logit_scale)
    torch.testing.assert_close(losses["unmasked"]["loss_sdm"], want)


@pytest.mark.parametrize("attend_padding", [True, False])
def test_irr_loss_against_a_plain_loop(attend_padding):
    _, model = build("configs/CUHKPEDES/irra.yml", "MODEL.IRR.ATTEND_PADDING", attend_padding)
    batch = caption_batch(seed=1)
    image_tokens = model.image_tokens(batch)[2]
    loss = model.irr_loss(batch, image_tokens)

    tokens, _, padding = model.caption_features(batch["text_mlm"])
    mask = None if attend_padding else padding
    logits = model.irr["mlm"](model.irr["cross"](tokens, image_tokens, mask))
    labels = batch["text_mlm_labels"]
    terms = []
    for b in range(labels.shape[0]):
        for pos in range(labels.shape[1]):
            if labels[b, pos] != 0:
                log_p = F.log_softmax(logits[b, pos].double(), dim=0)
                terms.append(-log_p[labels[b, pos]])
    assert terms, "the fixture masks no word"
    torch.testing.assert_close(loss.double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-5)


def test_irr_attends_to_the_padding_as_irras_code():
    """IRRA's cross-modal Transformer has no attention mask: the padding positions after the
    end token change the masked words' features, hence the loss; ATTEND_PADDING False removes
    them."""
    batch = caption_batch(seed=2)
    losses = {}
    for attend in (True, False):
        _, model = build("configs/CUHKPEDES/irra.yml", "MODEL.IRR.ATTEND_PADDING", attend)
        assert model.attend_padding is attend
        image_tokens = model.image_tokens(batch)[2]
        tokens, _, padding = model.caption_features(batch["text_mlm"])
        noisy = tokens.masked_fill(padding[..., None], 7.0)
        losses[attend] = [
            model.irr_loss(batch, image_tokens, (t, padding)) for t in (tokens, noisy)
        ]
    assert not torch.allclose(losses[True][0], losses[True][1])
    torch.testing.assert_close(losses[False][0], losses[False][1])
    assert build_config(str(ROOT / "configs/CUHKPEDES/irra.yml")).MODEL.IRR.ATTEND_PADDING


def test_irr_padding_mask_excludes_the_padding():
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
