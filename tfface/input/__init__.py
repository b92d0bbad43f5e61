"""The tf.data training input: TFRecord shards -> decoded, flipped, per-replica batches.

Above `tfface.inference` in the layers, because it decodes images with the
one decode policy that training, verification and serving share.
"""
