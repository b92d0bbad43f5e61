"""Initializers of class-centre matrices that can be drawn a row range at a time.

A sharded head (Partial FC) holds rows `[start, stop)` of a `[C, D]` matrix on
each device. For it to start from exactly the matrix that the replicated
`MarginHead` gets for the same seed, and for no device to materialize all
`C` rows, each block of `block_rows` rows is drawn from its own stateless
normal stream, keyed by `(seed, block index)`: any row range is then the
concatenation of the blocks it touches, trimmed, and equals those rows of the
full matrix bit for bit.

The draws always run on the CPU: stateless Philox streams are fixed by their
seed, but the normal transform's rounding may differ between device kinds,
and a GPU-initialized replicated head must equal a CPU-assembled shard.
"""
import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfface")
class RowBlockNormal(keras.initializers.Initializer):
  """Normal(0, stddev) matrix whose row ranges can be generated independently.

  Args:
    stddev: standard deviation of the entries (InsightFace: 0.01).
    seed: integer seed; the same seed gives the same matrix in every process.
    block_rows: rows per independent stream. Part of the definition of the
      matrix: another value draws another matrix.

  Raises:
    ValueError: `stddev` negative or `block_rows` < 1.

  Example:
    >>> init = RowBlockNormal(stddev=0.01, seed=0)
    >>> full = init((1000, 512))            # the replicated head's kernel
    >>> part = init.rows(250, 500, 512)     # == full[250:500], bit for bit
  """

  def __init__(self, stddev=0.01, seed=0, block_rows=1024):
    if stddev < 0:
      raise ValueError(f"RowBlockNormal needs stddev >= 0. Received: stddev={stddev}")
    if block_rows < 1:
      raise ValueError(f"RowBlockNormal needs block_rows >= 1. Received: "
                       f"block_rows={block_rows}")
    self.stddev = float(stddev)
    self.seed = int(seed)
    self.block_rows = int(block_rows)

  def __call__(self, shape, dtype=None):
    if len(shape) != 2:
      raise ValueError(f"RowBlockNormal draws [rows, columns] matrices. Received: "
                       f"shape={tuple(shape)}")
    return self.rows(0, int(shape[0]), int(shape[1]), dtype=dtype)

  def rows(self, start, stop, dim, dtype=None):
    """Rows `[start, stop)` of the matrix with `dim` columns.

    Args:
      start: first row (>= 0).
      stop: one past the last row (>= start).
      dim: number of columns.
      dtype: float dtype of the result (float32 by default).

    Returns:
      A `tf.Tensor` [stop - start, dim], equal to `self((C, dim))[start:stop]`
      for every C >= stop.

    Raises:
      ValueError: an empty or negative range bound, or dim < 1.
    """
    start, stop, dim = int(start), int(stop), int(dim)
    if not 0 <= start <= stop or dim < 1:
      raise ValueError(f"RowBlockNormal.rows needs 0 <= start <= stop and dim >= 1. "
                       f"Received: start={start}, stop={stop}, dim={dim}")
    dtype = tf.as_dtype(keras.backend.standardize_dtype(dtype or "float32"))
    first = start // self.block_rows
    last = max(first, math.ceil(stop / self.block_rows))
    with tf.device("/cpu:0"):
      blocks = [self._block(b, dim) for b in range(first, last)]
      matrix = tf.concat(blocks, axis=0) if len(blocks) > 1 else blocks[0]
      offset = start - first * self.block_rows
      return tf.cast(matrix[offset:offset + stop - start], dtype)

  def _block(self, index, dim):
    # float32 draws, cast afterwards: a float16 matrix is the float32 one
    # rounded, not another stream.
    return tf.random.stateless_normal(
        [self.block_rows, dim], seed=[self.seed, index], stddev=self.stddev,
        dtype=tf.float32, alg="philox")

  def get_config(self):
    return {"stddev": self.stddev, "seed": self.seed, "block_rows": self.block_rows}
