"""tfface: InsightFace face-recognition training in TensorFlow 2 / Keras 3.

`import tfface` is cheap: it loads no TensorFlow. Each package is imported
on its own (see docs/architecture.md for the layers): `tfface.data` (files
on disk, TensorFlow-free), `tfface.models` (Keras backbones and heads;
importing it registers tfface's layers, so `keras.saving.load_model` can
read any `.keras` file that tfface wrote), `tfface.inference`,
`tfface.input`, `tfface.training`, `tfface.evaluation`, `tfface.export`.
"""
__version__ = "0.3.2"
