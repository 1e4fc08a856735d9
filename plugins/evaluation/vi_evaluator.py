"""Visible-infrared re-identification evaluator on fast-reid's evaluator interface."""

import logging
import time
from collections import OrderedDict

import numpy as np
from tabulate import tabulate

from .gather import IndexedFeatureEvaluator
from .metrics import vi_rank_metrics
from .vi_protocols import protocol_modes, protocol_trials

logger = logging.getLogger(__name__)

METRICS = ("R1", "R5", "R10", "R20", "mAP", "mINP")
# Every reference test script (AGW, CAJ, DEEN) prints R1, R5, R10 and R20.
TOPK = (1, 5, 10, 20)


class VIReIDEvaluator(IndexedFeatureEvaluator):
    """Collects the features of every test image once and runs every mode and trial of the
    dataset's protocol (:mod:`plugins.evaluation.vi_protocols`) on them.

    Features are L2-normalised, so similarity is cosine. Every trial indexes the same features:
    query features are extracted once, and each gallery draw selects from them.

    Results: ``{mode}/{R1,R5,R10,R20,mAP,mINP}`` (mean over trials) and the same keys with
    ``_std`` (population standard deviation over trials, 0 for one trial); top-level ``R1``,
    ``mAP``, ``mINP`` and ``metric`` (= R1, for model selection) are those of the first mode
    (SYSU-MM01 ``all_single``, RegDB ``v2t``, LLCM ``ir2vis``).

    Args:
        test_set (VITestSet): every test image once; ``inputs["index"]`` is a position in it.
        trials (int): gallery draws per mode for SYSU-MM01 and LLCM (RegDB has one).
        chunk_size (int): query rows ranked at once (bounds memory).
        dataset_name (str): used in the printed table.
        llcm_vis2ir (str): LLCM VIS-to-IR convention (``TEST.LLCM_VIS2IR``): ``"published"``
            (the drawn infrared images query every visible image, as DEEN's code and every
            published table) or ``"literal"`` (every visible image queries the drawn infrared
            images); see :mod:`plugins.evaluation.vi_protocols`.
    """

    def __init__(
        self, test_set, trials=10, chunk_size=1024, dataset_name="", llcm_vis2ir="published"
    ):
        self.test_set = test_set
        self.llcm_vis2ir = llcm_vis2ir
        self.chunk_size = chunk_size
        self.dataset_name = dataset_name
        self.modes = protocol_modes(test_set)
        # The draws depend on the test set only: made once, reused by every evaluation.
        self.trials = OrderedDict(
            (m, protocol_trials(test_set, m, trials, llcm_vis2ir=llcm_vis2ir)) for m in self.modes
        )
        self.pids = np.asarray([image.pid for image in test_set.images], dtype=np.int64)
        self.cams = np.asarray([image.camid for image in test_set.images], dtype=np.int64)
        self.reset()

    def evaluate(self):
        feats = self.ordered_features(len(self.test_set.images))
        if feats is None:  # not the main process
            return {}

        rows = OrderedDict()
        start = time.perf_counter()
        for mode, trials in self.trials.items():
            runs = []
            for trial in trials:
                q, g = trial.query, trial.gallery
                runs.append(
                    vi_rank_metrics(
                        feats[q],
                        feats[g],
                        self.pids[q],
                        self.pids[g],
                        self.cams[q],
                        self.cams[g],
                        camera_rule=trial.camera_rule,
                        unique_ids=trial.unique_ids,
                        topk=TOPK,
                        chunk_size=self.chunk_size,
                    )
                )
            values = np.asarray([[run[k] for k in METRICS] for run in runs], dtype=np.float64)
            rows[mode] = {
                "trials": len(runs),
                "queries": len(trials[0].query),
                "gallery": float(np.mean([len(t.gallery) for t in trials])),
                "mean": dict(zip(METRICS, values.mean(0).tolist())),
                "std": dict(zip(METRICS, values.std(0).tolist())),
            }
        logger.info(
            f"VI-ReID ranking time: {time.perf_counter() - start:.2f} s for "
            f"{sum(len(t) for t in self.trials.values())} trials"
        )

        results = OrderedDict()
        first = rows[self.modes[0]]["mean"]
        for key in ("R1", "mAP", "mINP"):
            results[key] = first[key]
        for mode, row in rows.items():
            for key in METRICS:
                results[f"{mode}/{key}"] = row["mean"][key]
            for key in METRICS:
                results[f"{mode}/{key}_std"] = row["std"][key]
        results["metric"] = first["R1"]
        self._print_table(rows)
        return results

    def _print_table(self, rows):
        headers = ["mode", "trials", *METRICS]
        table = [
            [mode, row["trials"]]
            + [f"{row['mean'][k]:.2f} +- {row['std'][k]:.2f}" for k in METRICS]
            for mode, row in rows.items()
        ]
        sizes = "; ".join(
            f"{mode}: {row['queries']} queries, gallery {row['gallery']:g}"
            for mode, row in rows.items()
        )
        if self.test_set.protocol == "llcm":
            sizes += f"; vis2ir in the {self.llcm_vis2ir} convention"
            if self.llcm_vis2ir == "published":
                sizes += " (queries: the drawn infrared images; gallery: every visible image)"
        name = f" on {self.dataset_name}" if self.dataset_name else ""
        logger.info(
            f"VI-ReID{name} ({self.test_set.protocol} protocol; mean +- std over trials; "
            f"{sizes}):\n" + tabulate(table, headers=headers, tablefmt="pipe")
        )
