"""The other libraries' internals the analysis relies on, one module per library.

Why: torch and transformers offer no public way to do a few things the computation needs (the
store of a torchrun job for the ranks' heartbeats, the modules a model must not split over
devices), so those uses reach into their private names, which a new version may change without
notice. Each use lives in the module of its library here, beside the list of what it relies
on; ``tests/test_compat.py`` checks that list against the installed version and fails naming
the version and what is gone. Nothing here imports the rest of layerscope.
"""
