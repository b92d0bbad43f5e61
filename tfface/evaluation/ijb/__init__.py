"""IJB-B / IJB-C 1:1 template verification, as InsightFace's `eval_ijbc.py` computes it."""
from tfface.evaluation.ijb.runner import IJBResult
from tfface.evaluation.ijb.runner import evaluate_embeddings
from tfface.evaluation.ijb.runner import evaluate_ijb
from tfface.evaluation.ijb.runner import run_protocol
from tfface.evaluation.ijb.tar_far import FARS
from tfface.evaluation.ijb.tar_far import roc_curve
from tfface.evaluation.ijb.tar_far import tar_at_far

__all__ = ["IJBResult", "evaluate_embeddings", "evaluate_ijb", "run_protocol", "FARS",
           "roc_curve", "tar_at_far"]
