"""Bundled samples: a tiny Llama-style model (`tiny/`) and small datasets (`datasets/`).

Why they are bundled: every feature of layerscope (computing gradient statistics, the cache, the
TUI, the paper-format export) must run and be tested on a laptop without a download or a GPU.
The datasets are written by `generate_datasets.py` and the model by `build_tiny_model.py`, both
deterministic, so anyone can check that the committed files are what the scripts produce. None
of it is the paper's data.
"""
