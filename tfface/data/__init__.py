"""Dataset files on disk, without TensorFlow.

* `tfface.data.insightface`: MXNet RecordIO, InsightFace's `.rec`/`.idx`/
  `property` layout, verification `.bin` files, `.lst` conversions.
* `tfface.data.tfrecord`: the TFRecord layout tfface trains from (schema,
  `manifest.json`, framing).
* `tfface.data.transcode`: `.rec` -> globally shuffled TFRecord shards.
* `tfface.data.synthetic`: the embedded synthetic face datasets.
* `tfface.data.inspection`: what `tools/inspect_data.py` reports.

Nothing here imports TensorFlow (a test checks it), so the data tools start
in a fraction of a second. The tf.data input pipeline is `tfface.input`.
"""
