"""MXNet and InsightFace file formats.

* `recordio`: MXNet RecordIO (`.rec` + `.idx`) and `IRHeader`.
* `rec`, `rec_writer`: InsightFace's dataset layout of a `.rec` (header and
  identity records, header-less recs, `property`), read and written.
* `verification_bin`, `pairs`: verification `.bin` files, and building them
  from pairs lists.
* `conversions`: `.rec` <-> folders of images, `.lst` files.
"""
