"""Headless core of layerscope: computation, statistics, data loading and the results cache.

Nothing in here may import textual (enforced by ruff's banned-api rule and a test), and nothing
imports torch or transformers at module level except the modules that compute: browsing cached
results must work without them.
"""
