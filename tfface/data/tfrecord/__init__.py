"""The TFRecord layout tfface trains from: Example schema, shard names, manifest, framing."""
