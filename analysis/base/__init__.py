"""The bottom of the core: plain records, the settings schema, the one error root, environment
variables, default locations, GPUs by name and safe output paths. Nothing here imports torch,
DuckDB or another layerscope package except :mod:`layerscope.analysis.compat`, so every layer
above can share these names without a cycle."""
