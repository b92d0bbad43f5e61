"""The TFRecord layout tfface trains from, without TensorFlow.

* `schema`: the Example features, shard names and `manifest.json`.
* `digest`: the shard digests a manifest records (SHA-256, BLAKE2b-256).
* `example_batch`: a shard's Examples framed as TFRecords, with numpy.
* `framing`: reading TFRecord files back (records, CRC checks, digest scan).
* `integrity`: shards against their manifest (sizes, digests, the first
  corrupt record), for the trainer and `inspect_data --verify`.
"""
