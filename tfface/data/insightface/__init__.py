"""MXNet and InsightFace file formats: RecordIO, `.rec` datasets, `.bin` pairs, `.lst`."""
