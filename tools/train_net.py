#!/usr/bin/env python
"""Train or evaluate any model of the plugin (or of a mixed-in fast-reid project).

    python tools/train_net.py --config-file configs/RGBTPEDES/mganet.yml
    python tools/train_net.py --config-file configs/RGBTPEDES/mganet.yml --eval-only \
        MODEL.WEIGHTS output/rgbtpedes/mganet/model_final.pth
    python tools/train_net.py --config-file my.yml --extra-imports my_fastreid_project
    python tools/train_net.py --config-file configs/RGBTPEDES/mganet.yml --resume  # after Ctrl-C
    python tools/train_net.py --config-file C --num-gpus 2 [MODEL.DEVICE cpu]  # torch DDP

Exit status: 0 on success; 128 + signal number after SIGINT / SIGTERM (a checkpoint is saved,
``--resume`` continues); 1 with a one-line message when OUTPUT_DIR is in use by another run or
MODEL.WEIGHTS / the last checkpoint cannot be loaded into the configured model.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
from plugins.engine import plugin_argument_parser, train_or_evaluate  # noqa: E402
from plugins.engine.checkpoint import CheckpointError, TrainingInterrupted  # noqa: E402
from plugins.engine.defaults import OutputDirInUse, build_config  # noqa: E402
from plugins.engine.launch import launch  # noqa: E402

if __name__ == "__main__":
    args = plugin_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        # --num-gpus N runs N processes: one NCCL process per GPU, or with MODEL.DEVICE cpu
        # N gloo processes on the CPU.
        device = "cuda"
        if args.num_gpus * args.num_machines > 1:
            device = build_config(args.config_file, args.opts, args.extra_imports).MODEL.DEVICE
        launch(
            train_or_evaluate,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            device="cpu" if device == "cpu" else "cuda",
        )
    except TrainingInterrupted as e:  # already logged, with how to continue
        sys.exit(e.exit_code)
    except (OutputDirInUse, CheckpointError) as e:
        sys.exit(f"error: {e}")
