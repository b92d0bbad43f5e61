"""InsightFace's verification protocol: `.bin` embedding, metrics, ROC.

Models are loaded and run through `tfface.inference`; this package decodes
`.bin` targets, runs the protocol on both embedding forms and reports.
"""
from tfface.evaluation.protocol import evaluate_embeddings
from tfface.evaluation.verification import OperatingPoint
from tfface.evaluation.verification import VerificationResult
from tfface.evaluation.verification import check_foldable
from tfface.evaluation.verification import decode_bin_images
from tfface.evaluation.verification import evaluate_flip_pairs
from tfface.evaluation.verification import measure_operating_point
from tfface.evaluation.verification import verify

__all__ = ["evaluate_embeddings", "verify", "VerificationResult", "OperatingPoint",
           "decode_bin_images", "evaluate_flip_pairs", "measure_operating_point",
           "check_foldable"]
