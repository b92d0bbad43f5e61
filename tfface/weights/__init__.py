"""Import InsightFace pretrained weights (ONNX model zoo, arcface_torch .pth).

`import_weights(source, network)` returns a tfface backbone holding the
source's weights; `convert` also saves it as a `.keras` file. See
`docs/pretrained.md`.
"""
from tfface.weights.importer import convert
from tfface.weights.importer import import_weights
from tfface.weights.importer import import_with_report

__all__ = ["convert", "import_weights", "import_with_report"]
