"""`.rec` -> globally shuffled, sharded TFRecords (`tools/rec2tfrecord.py`).

`transcode.transcode(...)` orchestrates; `shard_writer` is a worker's job;
`rec_batch` reads a group of records in one pass.
"""
