"""tfface: InsightFace face-recognition training in TensorFlow 2 / Keras 3.

Importing `tfface` registers its Keras layers, so `keras.saving.load_model`
can read any `.keras` file that tfface wrote.
"""
__version__ = "0.1.0"
