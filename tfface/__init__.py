"""tfface: InsightFace face-recognition training in TensorFlow 2 / Keras 3.

Importing `tfface` registers its Keras layers, so `keras.saving.load_model`
can read any `.keras` file that tfface wrote.
"""
__version__ = "0.1.0"

from tfface import losses  # noqa: E402,F401  (registers nothing, but is API)
from tfface import models  # noqa: E402,F401  (registers the custom layers)
