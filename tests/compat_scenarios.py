"""One scenario per fastreid compatibility fix: each raises when its defect shows.

``tests/test_compat.py`` runs every scenario in-process with all fixes applied (it must pass)
and, in a subprocess, with its own fix disabled through ``PLUGINS_COMPAT_DISABLE`` (it must fail
with the defect's error). Run one by hand: ``python tests/compat_scenarios.py NAME [DATA_ROOT]``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401

# isort: split
import torch  # noqa: E402
from fastreid.config import get_cfg  # noqa: E402

from plugins.config import add_plugins_config  # noqa: E402


def tiny_baseline_cfg(data_root=""):
    """fast-reid's stock Baseline with the tiny CLIP backbone, on the CPU."""
    cfg = get_cfg()
    add_plugins_config(cfg)
    cfg.merge_from_file(
        os.path.join(os.path.dirname(__file__), "..", "configs", "Market1501", "clip_baseline.yml")
    )
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.CLIP.NAME", "tiny-vit",
            "MODEL.CLIP.STRIDE", "8",
            "MODEL.BACKBONE.FEAT_DIM", "64",
            "MODEL.BACKBONE.PRETRAIN", "False",
            "MODEL.CLIP.WEIGHTS", "",
            "MODEL.HEADS.NUM_CLASSES", "6",
            "INPUT.SIZE_TRAIN", "[64, 32]",
            "INPUT.SIZE_TEST", "[64, 32]",
            "INPUT.PADDING.SIZE", "2",
            "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.NUM_INSTANCE", "2",
            "SOLVER.IMS_PER_BATCH", "8",
            "SOLVER.BASE_LR", "1e-3",
            "SOLVER.WARMUP_ITERS", "0",
            "OUTPUT_DIR", os.path.join(data_root or "/nonexistent", "out"),
        ]
    )  # fmt: skip
    return cfg


def with_datasets_root(data_root):
    """fast-reid reads FASTREID_DATASETS once at import; point its module variable at the fixture."""
    import fastreid.data.build as data_build

    data_build._root = data_root


def scenario_collections_mapping(data_root):
    import fastreid.data  # noqa: F401
    import fastreid.evaluation.testing  # noqa: F401


def scenario_torch_six(data_root):
    import fastreid.data.build  # noqa: F401


def scenario_optimizer_contiguous(data_root):
    """Every trainable parameter changes after a few iterations of fast-reid's DefaultTrainer."""
    from fastreid.engine import DefaultTrainer
    from fastreid.utils.events import EventStorage

    with_datasets_root(data_root)
    cfg = tiny_baseline_cfg(data_root)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    trainer = DefaultTrainer(cfg)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with EventStorage(0) as trainer.storage:
        for it in range(3):
            trainer.iter = it
            trainer.run_step()
    unchanged = [
        n for n, p in model.named_parameters() if n in before and torch.equal(p, before[n])
    ]
    if unchanged:
        raise AssertionError(f"{len(unchanged)}/{len(before)} trainable parameters unchanged")


def scenario_dataloader_without_cuda(data_root):
    from fastreid.data import build_reid_train_loader

    with_datasets_root(data_root)
    loader = build_reid_train_loader(tiny_baseline_cfg(data_root))
    batch = next(iter(loader))
    assert batch["images"].shape == (8, 3, 64, 32), batch["images"].shape


def scenario_amp_on_cpu(data_root):
    from fastreid.engine.train_loop import AMPTrainer
    from fastreid.modeling import build_model
    from fastreid.solver import build_optimizer
    from fastreid.utils.events import EventStorage

    cfg = tiny_baseline_cfg(data_root)
    model = build_model(cfg)
    optimizer, params = build_optimizer(cfg, model)
    batch = {"images": torch.rand(4, 3, 64, 32) * 255, "targets": torch.tensor([0, 0, 1, 1])}
    trainer = AMPTrainer(model, [batch] * 2, optimizer, params)
    with EventStorage(0):
        trainer.run_step()


def scenario_cython_exit(data_root):
    import subprocess

    import fastreid.evaluation.reid_evaluation as reid_evaluation

    class Failed:
        returncode = 1

    original = subprocess.run
    subprocess.run = lambda *a, **k: Failed()
    try:
        reid_evaluation.compile_helper()
    finally:
        subprocess.run = original


def scenario_random_affine(data_root):
    from fastreid.data.transforms import build_transforms
    from PIL import Image

    cfg = tiny_baseline_cfg(data_root)
    cfg.INPUT.AFFINE.ENABLED = True
    out = build_transforms(cfg, is_train=True)(Image.new("RGB", (32, 64), (90, 20, 200)))
    assert out.shape == (3, 64, 32), out.shape


def scenario_baseline_inplace_normalisation(data_root):
    from fastreid.modeling import build_model

    model = build_model(tiny_baseline_cfg(data_root)).eval()
    images = torch.rand(2, 3, 64, 32) * 255
    inputs = {"images": images.clone()}
    with torch.no_grad():
        model(inputs)
    if not torch.equal(inputs["images"], images):
        raise AssertionError("Baseline normalised its input in place")


def scenario_metric_printer_repeat(data_root):
    from fastreid.utils.events import CommonMetricPrinter, EventStorage

    printer = CommonMetricPrinter(max_iter=10)
    with EventStorage(0) as storage:
        storage.epoch = 0
        storage.put_scalar("loss", 1.0)
        printer.write()
        printer.write()  # fast-reid's PeriodicWriter writes again at an epoch's last iteration


SCENARIOS = {
    name[len("scenario_") :]: fn for name, fn in globals().items() if name.startswith("scenario_")
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](sys.argv[2] if len(sys.argv) > 2 else "")
    print("scenario passed")
