"""Synthetic face datasets generated on the fly (no downloads).

`faces` draws identities and photos of them; `dataset.generate` packs them
as an InsightFace dataset (`train.rec`, `property`, `synth_val.bin`).
"""
