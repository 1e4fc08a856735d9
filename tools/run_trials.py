#!/usr/bin/env python
"""Train and evaluate one model per RegDB trial (its ten train/test identity splits), then average.

    python tools/run_trials.py --config-file configs/RegDB/agw_R50.yml
    python tools/run_trials.py --config-file configs/RegDB/bagtricks_R50.yml --trials 1 2 3 \
        MODEL.BACKBONE.PRETRAIN_PATH /path/to/resnet50-19c8e357.pth

Trial ``t`` runs ``tools/train_net.py`` (one process each) with ``DATASETS.REGDB_TRIAL t`` and
``OUTPUT_DIR <base>/trial<t>``, where ``<base>`` is the config's ``OUTPUT_DIR`` (or the one given
among the ``KEY VALUE`` overrides). Running the same command again continues where it stopped:

* a finished trial (``results.json`` written after ``model_final.pth``) is read back;
* a trial with ``model_final.pth`` but no later ``results.json`` (its final evaluation failed)
  is evaluated again (``--eval-only MODEL.WEIGHTS .../model_final.pth``);
* an interrupted trial (``last_checkpoint``) continues with ``--resume``;
* any other trial is trained from the start.

A multi-stage model (CLIP4VI-ReID) keeps its stages in sub-folders of the trial folder: it is
finished once the run has copied the last stage's ``results.json`` up, continues with
``--resume`` inside an interrupted stage, and otherwise runs again (finished stages are reused).

Before anything runs, every trial folder that holds a run (finished, interrupted or awaiting
its final evaluation) is compared with this command's settings: its ``config.yaml`` against the
config and overrides given now, key by key as the stage engine compares a reused stage
(``plugins.engine.stages.recorded_config``: paths, logging and evaluation keys aside). A trial
trained with other settings stops the command with one line naming the keys (delete that trial
folder to run it again with these settings, or pass another ``OUTPUT_DIR``): a trial is never
reported under settings it did not run with. Changed evaluation settings (``TEST.*``) of a
finished trial evaluate its final model again under the new ones.

``results.json`` alone does not mark a finished trial: every evaluation during training
(``TEST.EVAL_PERIOD``) rewrites it. Prints each trial's R1 / mAP / mINP per mode (visible-to-
thermal ``v2t``, thermal-to-visible ``t2v``) and their mean +- standard deviation over trials
(population, as the evaluator's ``*_std``); writes ``<base>/summary.json``.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
DATASET = "RegDB"
ALL_TRIALS = list(range(1, 11))
TABLE_METRICS = ("R1", "mAP", "mINP")


class TrialFailed(RuntimeError):
    """A trial's ``tools/train_net.py`` exited with a non-zero status."""

    def __init__(self, trial, returncode, log_path):
        self.trial = trial
        self.returncode = returncode
        self.log_path = log_path
        super().__init__(
            f"trial {trial} exited with status {returncode}; its output is in {log_path}. "
            "Run the same command again to continue (finished trials are read back)."
        )


class TrialSettingsChanged(RuntimeError):
    """A trial folder holds a run made with other settings than the ones requested now."""


def trial_dir(base, trial):
    """``<base>/trial<t>``, one trial's ``OUTPUT_DIR``."""
    return os.path.join(base, f"trial{trial}")


def read_results(path, dataset=DATASET):
    """The metrics of ``dataset`` in a ``results.json`` (``{dataset: {key: value}}``)."""
    with open(path) as f:
        results = json.load(f)
    if dataset in results:
        return results[dataset]
    if "R1" in results:
        return results
    raise KeyError(f"{path} holds no results for {dataset} (keys: {sorted(results)})")


def _stage_dirs(out_dir):
    """The stage folders of a multi-stage run (each holds the ``stage.json`` record)."""
    if not os.path.isdir(out_dir):
        return []
    return [
        os.path.join(out_dir, name)
        for name in sorted(os.listdir(out_dir))
        if os.path.isfile(os.path.join(out_dir, name, "stage.json"))
    ]


def _staged_trial_state(out_dir, stage_dirs):
    """A multi-stage trial: "done" once the run has published ``results.json`` after every
    stage's ``model_final.pth``; "resume" inside an interrupted stage; otherwise "train" (the
    stage engine reuses finished stages and evaluates the final model when all are done)."""
    results = os.path.join(out_dir, "results.json")
    finals = [os.path.join(d, "model_final.pth") for d in stage_dirs]
    done = [f for f in finals if os.path.isfile(f)]
    if len(done) == len(finals) and os.path.isfile(results):
        if all(os.path.getmtime(results) >= os.path.getmtime(f) for f in done):
            return "done"
    for stage_dir, final in zip(stage_dirs, finals):
        if not os.path.isfile(final) and os.path.isfile(os.path.join(stage_dir, "last_checkpoint")):
            return "resume"
    return "train"


def trial_state(out_dir):
    """What a trial folder needs: "done", "evaluate", "resume" or "train" (see the module doc)."""
    stage_dirs = _stage_dirs(out_dir)
    if stage_dirs:
        return _staged_trial_state(out_dir, stage_dirs)
    results = os.path.join(out_dir, "results.json")
    final = os.path.join(out_dir, "model_final.pth")
    if os.path.isfile(final):
        # The final evaluation runs after model_final.pth is written; an older results.json
        # comes from an evaluation during training.
        if os.path.isfile(results) and os.path.getmtime(results) >= os.path.getmtime(final):
            return "done"
        return "evaluate"
    if os.path.isfile(os.path.join(out_dir, "last_checkpoint")):
        return "resume"
    return "train"


def trial_command(config, trial, out_dir, opts, state):
    """The ``tools/train_net.py`` command line that brings a trial in ``state`` to "done"."""
    cmd = [sys.executable, TRAIN_NET, "--config-file", config]
    extra = []
    if state == "resume":
        cmd.append("--resume")
    elif state == "evaluate":
        cmd.append("--eval-only")
        extra = ["MODEL.WEIGHTS", os.path.join(out_dir, "model_final.pth")]
    elif state != "train":
        raise ValueError(f"no command for a trial in state {state!r}")
    return cmd + list(opts) + extra + trial_overrides(trial, out_dir)


def trial_overrides(trial, out_dir):
    """The overrides that make a config one trial's: its split and its folder."""
    return ["DATASETS.REGDB_TRIAL", str(trial), "OUTPUT_DIR", out_dir]


def run_command(cmd, log_path):
    """Run ``cmd`` (in this process's working directory, where relative paths in the overrides
    were meant) with its output appended to ``log_path``; returns its exit status.

    On Ctrl-C the child (which receives the same SIGINT) is waited for: it saves a checkpoint
    at its next iteration and exits, and the next run resumes from it.
    """
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return proc.wait()


# Evaluation keys that do not change a finished trial's figures: no reason to evaluate again.
_SAME_FIGURES = ("EVAL_PERIOD", "IMS_PER_BATCH", "RANK_CHUNK")


def requested_config(config, trial, out_dir, opts):
    """The config a trial runs with: ``config`` + ``opts`` + its trial number and folder."""
    from plugins.engine import build_config

    return build_config(config, list(opts) + trial_overrides(trial, out_dir))


def checked_state(config, trial, out_dir, opts, log=print):
    """``trial_state`` of a trial folder whose recorded run matches the requested settings.

    The folder's ``config.yaml`` (what its run was started with) is compared with
    ``requested_config``; a folder with nothing to continue or read back ("train") is not.

    Returns:
        str: the state; a finished trial whose evaluation settings (``TEST.*``) changed is
        evaluated again ("evaluate", or "train" for a multi-stage trial: every stage is reused
        and the final model evaluated).
    Raises:
        TrialSettingsChanged: the run was trained with other settings (one line naming them).
    """
    from plugins.engine import build_config
    from plugins.engine.stages import Stage, config_differences, recorded_config
    from plugins.modeling.clip import quick_gelu_setting

    state = trial_state(out_dir)
    path = os.path.join(out_dir, "config.yaml")
    if state == "train" or not os.path.isfile(path):
        return state
    fix = f"Delete {out_dir} to run it again with these settings, or pass another OUTPUT_DIR."
    try:
        recorded = build_config(path)
    except Exception as e:  # a key this code no longer has, or not a config at all
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TrialSettingsChanged(
            f"trial {trial}: {path} does not read as a config of this code ({first}). {fix}"
        ) from e
    requested = requested_config(config, trial, out_dir, opts)
    if quick_gelu_setting(requested.MODEL.CLIP.QUICKGELU) is None:
        # "auto" accepts the activation the run decided (and its checkpoints record).
        requested.MODEL.CLIP.QUICKGELU = recorded.MODEL.CLIP.QUICKGELU
    stage = Stage(f"trial{trial}")
    differ = config_differences(
        recorded_config(recorded, stage)["config"], recorded_config(requested, stage)["config"]
    )
    if differ:
        raise TrialSettingsChanged(
            f"trial {trial} in {out_dir} ran with other settings than this command's ({differ})."
            f" {fix}"
        )
    test = [
        f"TEST.{key}"
        for key in sorted(set(recorded.TEST) | set(requested.TEST))
        if key not in _SAME_FIGURES and recorded.TEST.get(key) != requested.TEST.get(key)
    ]
    if state == "done" and test:
        log(
            f"[trial {trial}] evaluated before with other {', '.join(test)}: evaluating it again",
            flush=True,
        )
        return "train" if _stage_dirs(out_dir) else "evaluate"
    return state


def run_trial(config, trial, base, opts, runner=None, log=print, state=None):
    """Bring one trial to "done" (training, resuming or evaluating as needed); its metrics.

    ``state``: the trial's state as :func:`checked_state` gave it (default: ``trial_state``).
    """
    runner = runner or run_command
    out_dir = trial_dir(base, trial)
    state = state or trial_state(out_dir)
    if state != "done":
        os.makedirs(out_dir, exist_ok=True)
        log_path = os.path.join(out_dir, "stdout.txt")
        verb = {"train": "training", "resume": "resuming", "evaluate": "evaluating"}[state]
        log(f"[trial {trial}] {verb} in {out_dir} (output in {log_path})", flush=True)
        returncode = runner(trial_command(config, trial, out_dir, opts, state), log_path)
        if returncode != 0:
            raise TrialFailed(trial, returncode, log_path)
        if trial_state(out_dir) != "done":
            raise RuntimeError(
                f"trial {trial} finished without a final results.json in {out_dir}; see {log_path}"
            )
    else:
        log(f"[trial {trial}] finished before: reading {out_dir}/results.json", flush=True)
    return read_results(os.path.join(out_dir, "results.json"))


def modes_of(results):
    """Evaluation modes in a results dict, in its order (``"v2t/R1"`` -> ``"v2t"``)."""
    modes = []
    for key in results:
        mode, sep, metric = key.partition("/")
        if sep and metric == "R1" and mode not in modes:
            modes.append(mode)
    return modes


def _metric_keys(results):
    """Per-mode metric keys of one trial (``"v2t/mAP"``), without the ``*_std`` spreads."""
    return [k for k in results if "/" in k and not k.endswith("_std")]


def summarize(per_trial):
    """Mean and population standard deviation over trials of every per-mode metric.

    Args:
        per_trial (dict): trial number -> that trial's results dict.

    Returns:
        dict: ``{"trials": [...], "per_trial": {t: {key: value}}, "mean": {key: value},
        "std": {key: value}}`` over the keys every trial has.
    """
    if not per_trial:
        raise ValueError("no trial results to summarize")
    trials = sorted(per_trial)
    first = per_trial[trials[0]]
    keys = [k for k in _metric_keys(first) if all(k in per_trial[t] for t in trials)]
    mean, std = {}, {}
    for key in keys:
        values = [float(per_trial[t][key]) for t in trials]
        mean[key] = sum(values) / len(values)
        std[key] = math.sqrt(sum((v - mean[key]) ** 2 for v in values) / len(values))
    return {
        "trials": trials,
        "per_trial": {t: {k: float(per_trial[t][k]) for k in keys} for t in trials},
        "mean": mean,
        "std": std,
    }


def format_table(summary, metrics=TABLE_METRICS):
    """A markdown table: one row per trial, then mean +- std; columns ``mode metric``."""
    first = summary["per_trial"][summary["trials"][0]]
    columns = [f"{mode}/{m}" for mode in modes_of(first) for m in metrics]
    columns = [c for c in columns if c in summary["mean"]]
    header = ["trial"] + [c.replace("/", " ") for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in summary["trials"]:
        cells = [f"{summary['per_trial'][t][c]:.2f}" for c in columns]
        lines.append("| " + " | ".join([str(t)] + cells) + " |")
    cells = [f"{summary['mean'][c]:.2f} +- {summary['std'][c]:.2f}" for c in columns]
    lines.append("| " + " | ".join(["mean +- std"] + cells) + " |")
    return "\n".join(lines)


def split_trials(argv):
    """Take ``--trials N [N ...]`` out of ``argv``: the integers that follow it, so that
    ``KEY VALUE`` overrides after them are not read as trials. Returns (trials or None, rest)."""
    rest, trials, i = [], None, 0
    while i < len(argv):
        if argv[i] == "--trials":
            trials = []
            i += 1
            while i < len(argv) and re.fullmatch(r"\d+", argv[i]):
                trials.append(int(argv[i]))
                i += 1
            if not trials:
                raise SystemExit("--trials needs one or more trial numbers (1-10)")
            continue
        rest.append(argv[i])
        i += 1
    return trials, rest


def parse_args(argv=None):
    trials, argv = split_trials(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        usage="%(prog)s --config-file FILE [--trials N [N ...]] [KEY VALUE ...]",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    args.trials = trials or list(ALL_TRIALS)
    bad = [t for t in args.trials if t not in ALL_TRIALS]
    if bad:
        parser.error(f"RegDB's trials are 1-10, got {bad}")
    if len(set(args.trials)) != len(args.trials):
        parser.error(f"--trials repeats a trial: {args.trials}")
    flags = [o for o in args.opts if o.startswith("--")]
    if flags:
        parser.error(f"unknown option(s) {flags}: every trial resumes or is read back by itself")
    if len(args.opts) % 2:
        parser.error(f"the config overrides must be KEY VALUE pairs, got {args.opts}")
    keys = args.opts[0::2]
    if "DATASETS.REGDB_TRIAL" in keys:
        parser.error("DATASETS.REGDB_TRIAL is set per trial: choose trials with --trials")
    return args


def base_output_dir(config, opts):
    """The config's ``DATASETS.NAMES`` check and ``OUTPUT_DIR`` (after the overrides)."""
    sys.path.insert(0, ROOT)
    import plugins  # noqa: F401
    from plugins.engine import build_config

    cfg = build_config(config, opts)
    names = set(cfg.DATASETS.NAMES) | set(cfg.DATASETS.TESTS)
    if names != {DATASET}:
        raise SystemExit(
            f"{config} trains / tests on {sorted(names)}: the trials are RegDB's ten training "
            "splits (DATASETS.REGDB_TRIAL), so the config must use RegDB alone."
        )
    if not cfg.OUTPUT_DIR:
        raise SystemExit("OUTPUT_DIR is empty: the trials need a folder")
    return os.path.abspath(cfg.OUTPUT_DIR)


def main(argv=None, runner=None):
    args = parse_args(argv)
    base = base_output_dir(args.config_file, args.opts)
    # Each trial gets its own OUTPUT_DIR below ``base``.
    pairs = list(zip(args.opts[0::2], args.opts[1::2]))
    opts = [x for key, value in pairs if key != "OUTPUT_DIR" for x in (key, value)]
    per_trial = {}
    try:
        # Every trial first: a stale one stops the command before hours of training.
        states = {
            t: checked_state(args.config_file, t, trial_dir(base, t), opts) for t in args.trials
        }
    except TrialSettingsChanged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        for trial in args.trials:
            per_trial[trial] = run_trial(
                args.config_file, trial, base, opts, runner=runner, state=states[trial]
            )
            res = per_trial[trial]
            print(
                f"[trial {trial}] " + ", ".join(f"{k} {res[k]:.2f}" for k in TABLE_METRICS),
                flush=True,
            )
    except TrialFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return e.returncode if 0 < e.returncode < 256 else 1
    summary = summarize(per_trial)
    summary.update(config=args.config_file, opts=opts, output_dir=base)
    print(
        f"\n{DATASET} ({args.config_file}): {len(args.trials)} trial(s) {args.trials}; "
        "mean +- std (population) over trials\n"
    )
    print(format_table(summary))
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nSummary written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
