"""tools/run_trials.py never reports a trial under settings it did not run with.

Each trial folder's ``config.yaml`` (written by the run that trained it) is compared with the
settings requested now before anything runs. ``TrainNet`` stands in for the
``tools/train_net.py`` subprocess: it parses the command with train_net's own parser, builds the
run's config as train_net does and writes ``config.yaml`` as its set-up does.
"""

import json
import os

import plugins  # noqa: F401

# isort: split
from plugins.engine import plugin_argument_parser
from plugins.engine.defaults import build_run_config
from tools import run_trials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "RegDB", "agw_R50.yml")


def _results(r1):
    res = {"R1": r1, "mAP": r1 / 2, "mINP": r1 / 4, "metric": r1}
    for mode in ("v2t", "t2v"):
        res.update({f"{mode}/R1": r1, f"{mode}/mAP": r1 / 2, f"{mode}/mINP": r1 / 4})
    return {"RegDB": res}


class TrainNet:
    """Runs a trial as tools/train_net.py would, minus the training: config.yaml, the final
    model (unless evaluating) and then results.json. ``calls``: (trial, kind) per command."""

    def __init__(self, r1=50.0):
        self.r1 = r1
        self.calls = []

    def __call__(self, cmd, log_path):
        assert cmd[1] == run_trials.TRAIN_NET
        args = plugin_argument_parser().parse_args(cmd[2:])
        cfg, _ = build_run_config(args)
        out = cfg.OUTPUT_DIR
        assert os.path.dirname(log_path) == out
        kind = "evaluate" if args.eval_only else "resume" if args.resume else "train"
        self.calls.append((cfg.DATASETS.REGDB_TRIAL, kind))
        with open(os.path.join(out, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        if not args.eval_only:
            open(os.path.join(out, "model_final.pth"), "w").close()
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(_results(self.r1), f)
        return 0


def _argv(base, *opts, trials=(1, 2)):
    argv = ["--config-file", CONFIG, "--trials", *map(str, trials)]
    return argv + list(opts) + ["OUTPUT_DIR", str(base)]


def test_rerun_with_other_overrides_stops_naming_the_keys(tmp_path, capsys):
    base = tmp_path / "regdb"
    first = TrainNet()
    assert run_trials.main(_argv(base, "SOLVER.MAX_EPOCH", "2"), runner=first) == 0
    assert first.calls == [(1, "train"), (2, "train")]

    # Where things are, logging and the evaluation batch size do not make another trial.
    same = TrainNet()
    argv = _argv(base, "SOLVER.MAX_EPOCH", "2", "SOLVER.LOG_PERIOD", "7", "TEST.IMS_PER_BATCH", "8")
    assert run_trials.main(argv, runner=same) == 0
    assert same.calls == []
    capsys.readouterr()
    summary = (base / "summary.json").read_bytes()

    # Other training settings: nothing runs (not even the new trial 3), one line names them.
    other = TrainNet(r1=90.0)
    argv = _argv(base, "SOLVER.MAX_EPOCH", "3", "SOLVER.BASE_LR", "0.01", trials=(1, 2, 3))
    assert run_trials.main(argv, runner=other) == 1
    assert other.calls == []
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: trial 1 in {base / 'trial1'} ran with other settings")
    assert "SOLVER.MAX_EPOCH: 2 there, 3 now" in err and "SOLVER.BASE_LR: " in err
    assert f"Delete {base / 'trial1'} to run it again" in err and "another OUTPUT_DIR" in err
    assert (base / "summary.json").read_bytes() == summary
    assert not (base / "trial3").exists()


def test_an_interrupted_trial_is_not_resumed_under_other_settings(tmp_path, capsys):
    base = tmp_path / "regdb"
    first = TrainNet()
    assert run_trials.main(_argv(base, "SOLVER.MAX_EPOCH", "2", trials=(1,)), runner=first) == 0
    # As if interrupted: a checkpoint to resume from, no final model.
    (base / "trial1" / "model_final.pth").unlink()
    (base / "trial1" / "last_checkpoint").write_text("model_interrupted.pth")
    other = TrainNet()
    assert run_trials.main(_argv(base, "SOLVER.MAX_EPOCH", "4", trials=(1,)), runner=other) == 1
    assert other.calls == []
    assert "SOLVER.MAX_EPOCH: 2 there, 4 now" in capsys.readouterr().err
    # The settings it was started with resume it.
    again = TrainNet()
    assert run_trials.main(_argv(base, "SOLVER.MAX_EPOCH", "2", trials=(1,)), runner=again) == 0
    assert again.calls == [(1, "resume")]


def test_changed_evaluation_settings_evaluate_a_finished_trial_again(tmp_path, capsys):
    base = tmp_path / "regdb"
    first = TrainNet(r1=50.0)
    assert run_trials.main(_argv(base, trials=(1,)), runner=first) == 0
    capsys.readouterr()
    argv = _argv(base, "TEST.METRIC", "euclidean", trials=(1,))
    later = TrainNet(r1=60.0)
    assert run_trials.main(argv, runner=later) == 0
    assert later.calls == [(1, "evaluate")]
    out = capsys.readouterr().out
    assert "[trial 1] evaluated before with other TEST.METRIC: evaluating it again" in out
    assert json.loads((base / "summary.json").read_text())["mean"]["v2t/R1"] == 60.0
    # Evaluated under those settings now: read back.
    again = TrainNet()
    assert run_trials.main(argv, runner=again) == 0
    assert again.calls == []


def test_changed_evaluation_settings_rerun_a_multi_stage_trial(tmp_path):
    out = tmp_path / "trial1"
    for stage in ("first", "second"):
        (out / stage).mkdir(parents=True)
        (out / stage / "stage.json").write_text("{}")
        (out / stage / "model_final.pth").write_text("")
    (out / "results.json").write_text(json.dumps(_results(1.0)))
    cfg = run_trials.requested_config(CONFIG, 1, str(out), [])
    (out / "config.yaml").write_text(cfg.dump())
    assert run_trials.checked_state(CONFIG, 1, str(out), []) == "done"
    # train_net reuses every finished stage and evaluates the final model under TEST.* now.
    assert run_trials.checked_state(CONFIG, 1, str(out), ["TEST.METRIC", "euclidean"]) == "train"
