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
- ``onnx.json``: the config, the weights file and its sha256, the input size, the versions and
  the measured differences to torch.

Then it runs onnxruntime (CPU) on random images and on tokenised captions, both padded to the
context length and trimmed to their own length, and prints each encoder's largest absolute
difference to the torch model. The check passes when that difference is at most
``--tolerance`` (default 1e-4) times the largest absolute torch feature value: fp32 kernels
that sum in another order differ by ~1e-6 relative, so 1e-4 leaves room for deep towers
while a wrong graph (a baked-in length, a lost normalisation) is off by far more.

Exit status: 0 when both encoders pass; 1 when either differs by more than the tolerance
(the files and onnx.json, with ``"passed": false``, are still written), or with a one-line
message when the config or MODEL.WEIGHTS cannot be used.
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
from plugins.search.engine import sha256_file  # noqa: E402
from plugins.search.onnx_encoders import (  # noqa: E402
    MANIFEST_FILE,
    OnnxEncoders,
    compare_with_torch,
    export_encoders,
)

DEFAULT_TOLERANCE = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Export a retrieval model's encoders to ONNX and compare onnxruntime to torch"
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the ONNX files")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="largest allowed |onnxruntime - torch| relative to the largest |torch feature| "
        f"(default {DEFAULT_TOLERANCE})",
    )
    parser.add_argument(
        "--extra-imports",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="import these modules (other fast-reid projects) and call their add_*_config(cfg)",
    )
    parser.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="config overrides, MODEL.WEIGHTS path/to/model_final.pth among them",
    )
    args = parser.parse_intermixed_args(argv)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out} is a file; pass a folder (it is created if missing)")
    if len(args.opts) % 2:
        parser.error(f"the config overrides must be KEY VALUE pairs, got {' '.join(args.opts)}")
    return args


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
    inference_only(cfg)
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
        cfg = build_eval_config(args)
        from fastreid.modeling.meta_arch import build_model

        model = build_model(cfg)
        Checkpointer(model).load(cfg.MODEL.WEIGHTS, strict=True, evaluation=True)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as e:
        # config and weights problems: their messages say what to pass instead
        sys.exit(f"error: {e}")
    model.eval()
    manifest_path = os.path.join(args.out, MANIFEST_FILE)
    if os.path.isfile(manifest_path):
        os.remove(manifest_path)  # it would describe the files this export replaces
    try:
        exported = export_encoders(model, args.out, cfg.INPUT.SIZE_TEST)
    except (TypeError, ImportError) as e:
        sys.exit(f"error: {e}")
    print(f"Wrote {exported['image_encoder']} and {exported['text_encoder']}")

    encoders = OnnxEncoders(args.out, device="cpu")
    diffs = compare_with_torch(model, encoders)
    passed = {name: check(name, diffs[name], args.tolerance) for name in ("image", "text")}
    manifest = {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "weights": cfg.MODEL.WEIGHTS,
        "weights_sha256": sha256_file(cfg.MODEL.WEIGHTS),
        "image_inputs": exported["image_inputs"],
        "image_size": exported["image_size"],
        "pixel_range": "RGB 0-255, float32; normalised inside the graph",
        "context_length": exported["context_length"],
        "embed_dim": encoders.embed_dim,
        "opset": exported["opset"],
        "versions": {"torch": torch.__version__, **_onnx_versions()},
        "tolerance": args.tolerance,
        "differences": diffs,
        "passed": all(passed.values()),
        "config": cfg.dump(),
    }
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    print(f"Wrote {manifest_path}")
    if not manifest["passed"]:
        failed = [name for name, ok in passed.items() if not ok]
        sys.exit(
            f"error: the ONNX {' and '.join(failed)} encoder differs from torch by more than "
            f"{args.tolerance} x the feature scale"
        )


def _onnx_versions():
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


if __name__ == "__main__":
    main()
