"""Model writers: SavedModel for TF Serving, TFLite, ONNX.

Loading any model form and embedding with it live in `tfface.inference`;
the table of formats and the file/REST orchestration in `tfface.serving`.
"""
from tfface.export.saved_model import build_serving_module
from tfface.export.saved_model import export_saved_model

__all__ = ["export_saved_model", "build_serving_module"]
