#!/usr/bin/env python
"""Convert checkpoints between IRRA's / FMFA's / AGW's code and this project.

    # IRRA's or FMFA's best.pth -> this project's format (MODEL.WEIGHTS also reads theirs as is)
    python tools/convert_checkpoint.py --from irra logs/CUHK-PEDES/iira/best.pth irra_cuhk.pth
    python tools/convert_checkpoint.py --from fmfa logs/CUHK-PEDES/fmfa/best.pth fmfa_cuhk.pth

    # AGW's best checkpoint (mangye16/Cross-Modal-Re-ID-baseline, train.py) -> AGWTwoStream's
    python tools/convert_checkpoint.py --from agw \
        save_model/sysu_agw_p4_n8_lr_0.1_seed_0_best.t agw_sysu.pth

    # a model trained here -> IRRA's layout, with the configs.yaml IRRA's test.py reads
    python tools/convert_checkpoint.py --to irra --config-file configs/CUHKPEDES/irra.yml \
        output/cuhkpedes/irra/model_final.pth irra_export/
    python test.py --config_file irra_export/configs.yaml   # in IRRA's repository

``--from agw`` writes ``{"model": ...}`` for ``AGWTwoStream`` (``plugins/modeling/agw_checkpoint.py``:
the unused entries of embed_net's three ResNets are dropped, AGW's recorded epoch / mAP / cmc are
printed, not kept; MODEL.WEIGHTS also reads AGW's file as is).
``--from irra`` / ``fmfa`` write ``{"model": ..., "model_record": ...}``: every entry renamed to this
project's modules (``plugins/modeling/irra_checkpoint.py`` has the mapping and the vocabulary
rule), in fp32, with the record of a QuickGELU CLIP; the optimizer and scheduler states of
their checkpoint are not carried over. ``--to irra`` writes ``OUT/best.pth`` and
``OUT/configs.yaml`` (IRRA's argument names, filled from ``--config-file``; IRRA's test.py
builds the model from them, then loads best.pth). IRRA's code builds its CLIP from OpenAI's
weights first (``pretrain_choice``), so that file must be where IRRA looks for it.

Exit status 0 on success; 1 with a one-line message otherwise.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
import torch  # noqa: E402
import yaml  # noqa: E402

from plugins.config import QUICKGELU_KEY, RECORD_ENTRY  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.engine.arguments import overrides_error  # noqa: E402
from plugins.engine.checkpoint import Checkpointer, CheckpointError, atomic_write  # noqa: E402
from plugins.modeling.agw_checkpoint import (  # noqa: E402
    AGW_METHOD_CONFIGS,
    AGWCheckpointError,
    agw_checkpoint_method,
    agw_checkpoint_metrics,
    from_agw_state_dict,
    is_agw_checkpoint,
)
from plugins.modeling.irra_checkpoint import (  # noqa: E402
    IRRA_META_ARCHITECTURES,
    IRRACheckpointError,
    from_irra_state_dict,
    is_irra_checkpoint,
    to_irra_state_dict,
)

FORMATS = ("irra", "fmfa", "agw")  # FMFA's code keeps IRRA's model and checkpoint layout
IRRA_DATASET_NAMES = {"CUHKPEDES": "CUHK-PEDES", "ICFGPEDES": "ICFG-PEDES", "RSTPReid": "RSTPReid"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert IRRA's / FMFA's / AGW's checkpoints to this project's format (IRRA's back)"
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source", choices=FORMATS, help="their format -> ours")
    direction.add_argument("--to", dest="target", choices=("irra",), help="ours -> IRRA's")
    parser.add_argument(
        "--config-file", metavar="FILE", help="with --to: the config the model was trained with"
    )
    parser.add_argument("input", metavar="IN", help="the checkpoint to convert")
    parser.add_argument("output", metavar="OUT", help="--from: a .pth file; --to: a folder")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="with --to: config overrides")
    args = parser.parse_intermixed_args(argv)
    if args.target and not args.config_file:
        parser.error("--to irra needs --config-file (the config the model was trained with)")
    message = overrides_error(args.opts)
    if message:
        parser.error(message)
    return args


def read_checkpoint(path):
    """The raw checkpoint dict (no conversion), with the trainer's readable errors."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file.")
    return Checkpointer(torch.nn.Module())._read_file(path, source="IN")


def from_agw(path, output):
    checkpoint = read_checkpoint(path)
    if not is_agw_checkpoint(checkpoint):
        raise AGWCheckpointError(
            f"{path} is not in AGW's layout (no 'net' state dict with 'base_resnet.base.*' entries)"
        )
    state = from_agw_state_dict(checkpoint["net"])
    atomic_write(output, lambda f: torch.save({"model": state}, f))
    recorded = agw_checkpoint_metrics(checkpoint)
    method = agw_checkpoint_method(checkpoint["net"])
    config = AGW_METHOD_CONFIGS[method]
    print(
        f"{path} (AGW's layout, train.py --method {method}"
        f"{', ' + str(recorded) if recorded else ''}): {len(state)} tensors written to {output} "
        f"(for MODEL.META_ARCHITECTURE AGWTwoStream as configs/<DATASET>/{config} builds it)"
    )


def from_reference(source, path, output):
    if source == "agw":
        return from_agw(path, output)
    checkpoint = read_checkpoint(path)
    if not is_irra_checkpoint(checkpoint):
        raise IRRACheckpointError(
            f"{path} is not in {source.upper()}'s layout (its 'model' has no 'base_model.*' "
            "entries)"
        )
    state = from_irra_state_dict(checkpoint["model"])
    data = {"model": state, RECORD_ENTRY: {QUICKGELU_KEY: True}}
    atomic_write(output, lambda f: torch.save(data, f))
    print(f"{path} ({source.upper()}'s layout): {len(state)} tensors written to {output}")


def irra_arguments(cfg, output_dir):
    """IRRA's ``utils/options.py`` arguments for the model and data of ``cfg``."""
    irr = cfg.MODEL.META_ARCHITECTURE in ("IRRA", "FMFA") and cfg.MODEL.IRR.WEIGHT > 0
    losses = ["sdm"] + ["mlm"] * irr + ["id"] * (cfg.MODEL.RETRIEVAL.ID_WEIGHT > 0)
    name = cfg.MODEL.CLIP.NAME
    dataset = cfg.DATASETS.TESTS[0] if cfg.DATASETS.TESTS else "CUHKPEDES"
    solver = cfg.SOLVER
    return {
        "name": os.path.basename(os.path.normpath(output_dir)),
        "output_dir": os.path.abspath(output_dir),
        "log_period": 100,
        "eval_period": 1,
        "val_dataset": "test",
        "resume": False,
        "resume_ckpt_file": "",
        "pretrain_choice": name.replace("ViT-B-16", "ViT-B/16").replace("ViT-B-32", "ViT-B/32"),
        "temperature": 1.0 / cfg.MODEL.RETRIEVAL.LOGIT_SCALE,
        "img_aug": True,
        "cmt_depth": cfg.MODEL.IRR.DEPTH,
        "masked_token_rate": 0.8,
        "masked_token_unchanged_rate": 0.1,
        "lr_factor": solver.NEW_LAYERS_LR_FACTOR,
        "MLM": bool(irr),
        "loss_names": "+".join(losses),
        "mlm_loss_weight": cfg.MODEL.IRR.WEIGHT,
        "id_loss_weight": cfg.MODEL.RETRIEVAL.ID_WEIGHT,
        "img_size": list(cfg.INPUT.SIZE_TEST),
        "stride_size": cfg.MODEL.CLIP.STRIDE or 16,
        "text_length": cfg.INPUT.TEXT.CONTEXT_LENGTH,
        "vocab_size": 49408,
        "optimizer": solver.OPT,
        "lr": solver.BASE_LR,
        "bias_lr_factor": solver.BIAS_LR_FACTOR,
        "momentum": 0.9,
        "weight_decay": solver.WEIGHT_DECAY,
        "weight_decay_bias": solver.WEIGHT_DECAY_BIAS,
        "alpha": solver.ADAM_BETAS[0],
        "beta": solver.ADAM_BETAS[1],
        "num_epoch": solver.MAX_EPOCH,
        "milestones": [20, 50],
        "gamma": 0.1,
        "warmup_factor": solver.WARMUP_FACTOR,
        "warmup_epochs": solver.WARMUP_EPOCHS,
        "warmup_method": solver.WARMUP_METHOD,
        "lrscheduler": "cosine",
        "target_lr": solver.ETA_MIN_LR,
        "power": 0.9,
        "dataset_name": IRRA_DATASET_NAMES.get(dataset, dataset),
        "sampler": "random",
        "num_instance": cfg.DATALOADER.NUM_INSTANCE,
        "root_dir": "./data",
        "batch_size": solver.IMS_PER_BATCH,
        "test_batch_size": cfg.TEST.IMS_PER_BATCH,
        "num_workers": 8,
        "training": True,
    }


def to_reference(path, output, config_file, opts):
    cfg = build_config(config_file, opts)
    if cfg.MODEL.META_ARCHITECTURE not in IRRA_META_ARCHITECTURES:
        raise IRRACheckpointError(
            f"{config_file} builds {cfg.MODEL.META_ARCHITECTURE}; only "
            f"{', '.join(IRRA_META_ARCHITECTURES)} models have IRRA's layout"
        )
    checkpoint = read_checkpoint(path)
    if is_irra_checkpoint(checkpoint):
        raise IRRACheckpointError(f"{path} is already in IRRA's layout")
    record = checkpoint.get(RECORD_ENTRY) or {}
    if record.get(QUICKGELU_KEY) is False:
        raise IRRACheckpointError(
            f"{path} records a CLIP built with GELU; IRRA's CLIP always uses QuickGELU, so its "
            "code would compute another function with these weights"
        )
    state = to_irra_state_dict(checkpoint["model"])
    os.makedirs(output, exist_ok=True)
    atomic_write(os.path.join(output, "best.pth"), lambda f: torch.save({"model": state}, f))
    text = yaml.safe_dump(irra_arguments(cfg, output), sort_keys=False)
    atomic_write(os.path.join(output, "configs.yaml"), lambda f: f.write(text.encode()))
    print(
        f"{path}: {len(state)} tensors in IRRA's layout written to {output}/best.pth; "
        f"run IRRA's test.py --config_file {output}/configs.yaml"
    )


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.source:
            from_reference(args.source, args.input, args.output)
        else:
            to_reference(args.input, args.output, args.config_file, args.opts)
    except (
        CheckpointError,
        IRRACheckpointError,
        AGWCheckpointError,
        KeyError,
        ValueError,
        OSError,
    ) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
