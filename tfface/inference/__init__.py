"""Using a trained face encoder: load any model form, embed images, decode them alike.

* `loading`: `load_embedding_model(path)` for a SavedModel export, a TF
  Serving model base, a training workdir or a `.keras` file;
  `as_embedding_model` also for an in-memory Keras backbone or a callable.
  All give an `EmbeddingModel` (uint8 RGB batches -> raw embeddings, plus the
  decision threshold and the embedding form it belongs to).
* `embedding`: the one "pixels -> model -> float32" wrapper, in graphs
  (`raw_embedding_tf`, `embedding_tf`) and in numpy (`keras_raw_fn`),
  fixed-size batches (`embed_batches`), the mirror's embedding and the two
  embedding forms `SINGLE_VIEW` and `FLIP_SUM`.
* `decode`: the one decode policy that training, verification and serving
  share (`decode_image` with OpenCV, `decode_image_tf` in graphs).

Importing this package loads no TensorFlow; the functions that need it
import it when called.
"""
from tfface.inference.embedding import FLIP_SUM
from tfface.inference.embedding import SINGLE_VIEW
from tfface.inference.loading import DEFAULT_THRESHOLD
from tfface.inference.loading import EmbeddingModel
from tfface.inference.loading import as_embedding_model
from tfface.inference.loading import from_keras
from tfface.inference.loading import load_embedding_model

__all__ = ["FLIP_SUM", "SINGLE_VIEW", "DEFAULT_THRESHOLD", "EmbeddingModel",
           "as_embedding_model", "from_keras", "load_embedding_model"]
