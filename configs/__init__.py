"""Training configs (`configs/NAME.py`), installed as `tfface_configs`.

Each file defines `get_config()`; `tools/train.py` loads them by path
(`--config=configs/emore.py`, or `--dataset emore`).
"""
