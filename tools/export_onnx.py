#!/usr/bin/env python
"""Export a trained retrieval model's image and text encoders to ONNX and check them.

    python tools/export_onnx.py --config-file configs/RGBTPEDES/mganet.yml \
        MODEL.WEIGHTS output/rgbtpedes/mganet/model_final.pth --out output/rgbtpedes/mganet/onnx

Writes to ``--out``:

- ``image_encoder.onnx``: inputs ``images`` (B, 3, H, W) float32 RGB in 0-255 (plus
  ``t_images`` for RGB + thermal models; text-T models take ``t_images`` alone), output
  ``features`` (B, D); H, W = ``INPUT.SIZE_TEST``, B dynamic.
- ``text_encoder.onnx``: input ``token_ids`` (B, L) int64, B and L dynamic (2 <= L <=
  ``MODEL.CLIP.CONTEXT_LENGTH``: a caption padded to the context length or trimmed to its own
  tokens), output ``features`` (B, D).
- ``onnx.json``: the config, the weights file and its sha256, the sha256 of every file of the
  export (``files``), the input size, the versions and the measured differences to torch.

The export is written into a hidden sibling folder that replaces ``--out`` whole once
``onnx.json`` is written (``--out`` must be new, empty or an earlier export), under a lock on
``<out>/.lock``: an interrupted export leaves the previous one as it was, and two exports into
one folder never mix. ``build_index.py --onnx`` checks each file against ``onnx.json``.

Then it runs onnxruntime (CPU) on random images and on tokenised captions, both padded to the
context length and trimmed to their own length, and prints each encoder's largest absolute
difference to the torch model. The check passes when that difference is at most
``--tolerance`` (default 1e-4) times the largest absolute torch feature value: fp32 kernels
that sum in another order differ by ~1e-6 relative, so 1e-4 leaves room for deep towers
while a wrong graph (a baked-in length, a lost normalisation) is off by far more.

Exit status: 0 when both encoders pass; 1 when either differs by more than the tolerance
(the files and onnx.json, with ``"passed": false``, are still written, and ``build_index.py
--onnx`` refuses them), or with a one-line message when the config, MODEL.WEIGHTS or ``--out``
cannot be used.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
import torch  # noqa: E402

from plugins.config import inference_only  # noqa: E402
from plugins.engine import build_config  # noqa: E402
from plugins.engine.checkpoint import Checkpointer, CheckpointError  # noqa: E402
from plugins.search.arguments import add_config_arguments, parse_config_args  # noqa: E402
from plugins.search.engine import SearchError, sha256_file  # noqa: E402
from plugins.search.folders import (  # noqa: E402
    FolderLock,
    check_output_folder,
    remove_stale_staging,
    staged_folder,
)
from plugins.search.onnx_encoders import (  # noqa: E402
    MANIFEST_FILE,
    OnnxEncoders,
    compare_with_torch,
    export_encoders,
    export_file_hashes,
    is_export_entry,
)

DEFAULT_TOLERANCE = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Export a retrieval model's encoders to ONNX and compare onnxruntime to torch"
    )
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the ONNX files")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="largest allowed |onnxruntime - torch| relative to the largest |torch feature| "
        f"(default {DEFAULT_TOLERANCE})",
    )
    return parse_config_args(parser, argv)


def build_eval_config(args):
    """The config for inference on the CPU: every weight from MODEL.WEIGHTS, no training parts."""
    cfg = build_config(args.config_file, args.opts, args.extra_imports)
    if not cfg.MODEL.WEIGHTS:
        raise CheckpointError(
            "MODEL.WEIGHTS is empty: pass MODEL.WEIGHTS path/to/model_final.pth (a checkpoint "
            "training wrote)."
        )
    if not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise CheckpointError(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: no such file (pass a model_*.pth that "
            "training wrote)."
        )
    inference_only(cfg, cfg.MODEL.WEIGHTS)  # CLIP's activation as the checkpoint records it
    cfg.MODEL.DEVICE = "cpu"  # exported on the CPU: the graph is device-independent
    cfg.freeze()
    return cfg


def check(name, stats, tolerance):
    """Print one encoder's difference; returns whether it is within the tolerance."""
    limit = tolerance * max(stats["scale"], 1e-12)
    ok = stats["max_abs_diff"] <= limit
    print(
        f"{name} encoder: max |onnxruntime - torch| = {stats['max_abs_diff']:.3g} (features up "
        f"to {stats['scale']:.3g}; limit {limit:.3g}) on {', '.join(stats['checked'])}: "
        f"{'ok' if ok else 'TOO LARGE'}"
    )
    return ok


def main(argv=None):
    args = parse_args(argv)
    try:
        out = check_output_folder(args.out, "--out", is_export_entry)
        cfg = build_eval_config(args)
        from fastreid.modeling.meta_arch import build_model

        model = build_model(cfg)
        Checkpointer(model).load(cfg.MODEL.WEIGHTS, strict=True, evaluation=True)
    except (SearchError, CheckpointError, FileNotFoundError, ValueError, KeyError) as e:
        # config, weights and --out problems: their messages say what to pass instead
        sys.exit(f"error: {e}")
    model.eval()
    try:
        with FolderLock(out, "--out"):
            remove_stale_staging(out)
            # Everything goes to a staging folder that replaces --out whole once onnx.json is
            # written: an interrupted export leaves the previous one as it was.
            with staged_folder(out) as staging:
                manifest, passed = export_into(staging, model, cfg, args.tolerance)
    except (SearchError, TypeError, ImportError) as e:
        sys.exit(f"error: {e}")
    print(f"Wrote {', '.join(sorted(manifest['files']))} and {MANIFEST_FILE} to {args.out}")
    if not manifest["passed"]:
        failed = [name for name, ok in passed.items() if not ok]
        sys.exit(
            f"error: the ONNX {' and '.join(failed)} encoder differs from torch by more than "
            f"{args.tolerance} x the feature scale"
        )


def export_into(folder, model, cfg, tolerance):
    """Export ``model`` into ``folder``, compare onnxruntime with torch and write the manifest.

    Returns:
        tuple: (manifest dict, {"image": ok, "text": ok}).
    """
    exported = export_encoders(model, folder, cfg.INPUT.SIZE_TEST)
    encoders = OnnxEncoders(folder, device="cpu")
    diffs = compare_with_torch(model, encoders)
    passed = {name: check(name, diffs[name], tolerance) for name in ("image", "text")}
    manifest = {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "weights": cfg.MODEL.WEIGHTS,
        "weights_sha256": sha256_file(cfg.MODEL.WEIGHTS),
        "files": export_file_hashes(folder),
        "image_inputs": exported["image_inputs"],
        "image_size": exported["image_size"],
        "pixel_range": "RGB 0-255, float32; normalised inside the graph",
        "context_length": exported["context_length"],
        "embed_dim": encoders.embed_dim,
        "opset": exported["opset"],
        "versions": {"torch": torch.__version__, **_onnx_versions()},
        "tolerance": tolerance,
        "differences": diffs,
        "passed": all(passed.values()),
        "config": cfg.dump(),
    }
    with open(os.path.join(folder, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return manifest, passed


def _onnx_versions():
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


if __name__ == "__main__":
    main()
