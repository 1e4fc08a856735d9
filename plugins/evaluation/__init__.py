"""Exact streaming ranking metrics and the cross-modal evaluators."""

from .metrics import rank_metrics, vi_rank_metrics  # noqa: F401
from .retrieval_evaluator import RetrievalEvaluator  # noqa: F401
from .vi_evaluator import VIReIDEvaluator  # noqa: F401
