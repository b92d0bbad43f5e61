"""Dataset files on disk, without TensorFlow.

* `tfface.data.insightface`: MXNet RecordIO, InsightFace's `.rec`/`.idx`/
  `property` layout, verification `.bin` files, `.lst` conversions.
* `tfface.data.tfrecord`: the TFRecord layout tfface trains from (schema,
  `manifest.json`, digests, framing, integrity checks).
* `tfface.data.transcode`: `.rec` -> globally shuffled TFRecord shards.
* `tfface.data.synthetic`: the embedded synthetic face datasets.
* `tfface.data.inspection`: what `tools/inspect_data.py` reports and checks.

No module here imports TensorFlow when it is imported (a test checks it), so
the data tools start in a fraction of a second; `inspection` imports it only
to decode the sample Examples of a TFRecord it describes. The tf.data input
pipeline is `tfface.input`.
"""
