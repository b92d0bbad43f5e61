"""Synthetic face datasets generated on the fly (no downloads): `faces` draws, `dataset` packs."""
