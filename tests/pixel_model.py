"""A constructed face encoder whose answers are known: a random projection of pooled pixels.

The model centres and scales the 8x8-average-pooled image (LayerNormalization
without parameters) and projects it with a fixed Gaussian matrix, so the
squared distance of two normalized embeddings is close to 2 - 2 x the
correlation of their pooled pixels (Johnson-Lindenstrauss): an image and a
re-encoded copy come out "same", unrelated images "different", at any
threshold in between. Its mirror image has another pooled layout, so the
flip-summed and single-view forms differ, and untrained-network degeneracy
(every distance near 0) cannot hide a wrong threshold. Standard Keras layers
only: it saves, loads and exports like a backbone.
"""
import keras
import numpy as np

EMBEDDING_SIZE = 64


def build_pixel_model(seed=0, pool=8, image_size=(112, 112)):
  """uint8/float RGB [b, H, W, 3] -> raw float32 [b, EMBEDDING_SIZE] embeddings."""
  inputs = keras.Input((*image_size, 3))
  x = keras.layers.Rescaling(1 / 128, offset=-127.5 / 128)(inputs)
  x = keras.layers.AveragePooling2D(pool)(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.LayerNormalization(center=False, scale=False)(x)
  projection = keras.layers.Dense(EMBEDDING_SIZE, use_bias=False)
  model = keras.Model(inputs, projection(x), name="pixel_model")
  rows = projection.kernel.shape[0]
  weights = np.random.default_rng(seed).normal(size=(rows, EMBEDDING_SIZE)) / np.sqrt(rows)
  projection.kernel.assign(weights.astype("float32"))
  return model
