"""Thin orchestration around exported and trained face encoders.

* `image_files`: embed image files or folders, compare two faces (the jobs
  of `tools/embed.py` and `tools/compare.py`);
* `rest_client`: a TF Serving REST client (`tools/serving_client.py`);
* `formats`: the table of export formats (`tools/export.py`).

Models are loaded and run through `tfface.inference`, written by
`tfface.export`.
"""
