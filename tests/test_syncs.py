"""HostSyncCounter finds the host-device syncs of a step on the CPU; the text models' training
steps keep to the one they need (the masked-token gather of the MLM heads)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401

# isort: split
import pytest  # noqa: E402
import torch  # noqa: E402

from plugins.engine.amp import PrecisionTrainer  # noqa: E402
from plugins.engine.syncs import HostSyncCounter  # noqa: E402
from plugins.modeling.cross_modal import (  # noqa: E402
    gather_masked,
    masked_accuracy,
    masked_token_loss,
)
from projects.mganet.losses import semantic_consistency_loss  # noqa: E402
from tests.fixtures_model import IRRA_HEADS, build_model_from, caption_batch  # noqa: E402

HERE = os.path.relpath(__file__, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _line(offset=0):
    import inspect

    return inspect.currentframe().f_back.f_lineno + offset


def test_counts_scalar_reads_and_data_sized_outputs_at_their_line():
    x = torch.randn(6, 3)
    mask = x[:, 0] > 0
    with HostSyncCounter() as counter:
        y = x @ x.t() + 1  # no sync
        torch.where(mask[:, None], x, 0.0).sum()  # no sync
        x.index_select(0, torch.tensor([0, 2]))  # no sync: the index's size is known
        first = _line(1)
        y.sum().item()
        bool(mask.any())
        x[mask]
        torch.nonzero(mask)
        torch.unique(torch.tensor([3, 1, 3]))
    places = {p.split(" ")[0]: n for p, n in counter.places.items()}
    assert counter.count == 5
    assert sorted(places) == [f"{HERE}:{first + i}" for i in range(5)]
    ops = sorted(p.split(" ")[1] for p in counter.places)
    assert ops == sorted(["(_local_scalar_dense)"] * 2 + ["(index)", "(nonzero)", "(_unique2)"])


def test_the_optimizers_host_side_step_count_is_not_a_sync():
    w = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([w], lr=0.1)
    w.sum().backward()
    with HostSyncCounter() as counter:
        opt.step()
    assert counter.count == 0


def test_sync_free_masked_losses_equal_the_boolean_index_ones():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[0, 3, 0, 6, 0], [1, 0, 0, 0, 2]])
    mask = labels != 0
    with HostSyncCounter() as counter:
        loss = masked_token_loss(logits, labels)
        acc = masked_accuracy(logits, labels)
    assert counter.count == 0
    ref = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    ref_acc = (logits[mask].argmax(-1) == labels[mask]).float().mean()
    assert acc.item() == pytest.approx(ref_acc.item())

    (rows, picked) = gather_masked(mask, logits, labels)
    assert torch.equal(rows, logits[mask]) and torch.equal(picked, labels[mask])

    recon = torch.randn(2, 5, 4, generator=g, requires_grad=True)
    target = torch.randn(2, 5, 4, generator=g)
    with HostSyncCounter() as counter:
        loss = semantic_consistency_loss(recon, target, labels)
        loss.backward()
    assert counter.count == 0
    cos = torch.nn.functional.cosine_similarity(recon[mask], target[mask], dim=-1)
    assert loss.item() == pytest.approx(1 - cos.mean().item(), rel=1e-6)

    # nothing masked: 0, and a finite (zero) gradient
    recon.grad = None
    none = torch.zeros_like(labels)
    loss = semantic_consistency_loss(recon, target, none)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(recon.grad, torch.zeros_like(recon))


@pytest.mark.parametrize(
    "config, heads, thermal, allowed",
    [
        ("configs/Demo/tipr_clip_sdm.yml", IRRA_HEADS[:2], False, 0),
        ("configs/Demo/clip_sdm_add.yml", IRRA_HEADS[:2], True, 0),
        # the masked-token gather: one nonzero, the vocabulary head on masked tokens only
        ("configs/Demo/irra.yml", IRRA_HEADS, False, 1),
        ("configs/Demo/fmfa.yml", IRRA_HEADS, False, 1),
        ("configs/Demo/mganet.yml", IRRA_HEADS[:2], True, 1),
    ],
)
def test_text_model_steps_make_no_sync_beyond_the_masked_token_gather(
    config, heads, thermal, allowed
):
    cfg, model = build_model_from(config, *heads)
    views = tuple(cfg.INPUT.TEXT.VIEWS) or ("mlm",)
    batch = caption_batch(
        views=views, thermal=thermal, context_length=cfg.INPUT.TEXT.CONTEXT_LENGTH
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    runner = PrecisionTrainer(model, [batch] * 2, optimizer, log_period=10**9)
    runner.run_step()  # lazy state (optimizer moments) first
    with HostSyncCounter() as counter:
        runner.run_step()
    assert counter.count == allowed, dict(counter.places)
    if allowed:
        assert all("cross_modal.py" in p and "(nonzero)" in p for p in counter.places)


def test_corl_collaboration_step_makes_no_sync():
    """IBM + ID + L_align + CRCL: CRCL's prototypes come without torch.unique."""
    from tests.test_corl import make_batch, model_in_stage

    model = model_in_stage(1)
    torch.manual_seed(0)
    batch = make_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    runner = PrecisionTrainer(
        model, [batch] * 2, torch.optim.AdamW(params, lr=1e-4), log_period=10**9
    )
    runner.run_step()
    with HostSyncCounter() as counter:
        runner.run_step()
    assert counter.count == 0, dict(counter.places)
