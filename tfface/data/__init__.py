"""Data layer: RecordIO, TFRecords, verification `.bin` files and input pipelines."""
