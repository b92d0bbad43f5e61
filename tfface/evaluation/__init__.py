"""InsightFace's verification protocol: `.bin` embedding, metrics, ROC."""
from tfface.evaluation.protocol import evaluate_embeddings
from tfface.evaluation.verification import VerificationResult
from tfface.evaluation.verification import decode_bin_images
from tfface.evaluation.verification import evaluate_flip_pairs
from tfface.evaluation.verification import verify

__all__ = ["evaluate_embeddings", "verify", "VerificationResult",
           "decode_bin_images", "evaluate_flip_pairs"]
