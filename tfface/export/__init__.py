"""Exports (SavedModel for TF Serving, TFLite, ONNX) and loading any model path."""
from tfface.export.loading import DEFAULT_THRESHOLD
from tfface.export.loading import EmbeddingModel
from tfface.export.loading import load_embedding_model
from tfface.export.saved_model import export_saved_model

__all__ = ["export_saved_model", "load_embedding_model", "EmbeddingModel",
           "DEFAULT_THRESHOLD"]
