"""`.rec` -> globally shuffled, sharded TFRecords (`tools/rec2tfrecord.py`).

`transcode.transcode(...)` plans, runs the workers and writes the manifest;
`shard_writer` is one worker's job (read a group of shards' records, frame,
write, verify); `rec_batch` locates a group's records in the mapped `.rec` in bulk.
"""
