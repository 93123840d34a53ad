"""Finding, checking, fingerprinting and loading models.

A model is the built-in ``tiny``, a local folder, or a hub id. Everything a user needs before
a computation starts is answered from the files alone, without torch and without the network:
where a spec points (:mod:`~layerscope.analysis.models.sources`), whether it is a causal LM
with a chat template (:mod:`~layerscope.analysis.models.inspection`) and its identity for the
cache key (:mod:`~layerscope.analysis.models.identity`). Only
:mod:`~layerscope.analysis.models.downloads` fetches a hub model, and only
:mod:`~layerscope.analysis.models.loading` (with :mod:`~layerscope.analysis.models.placement`
and :mod:`~layerscope.analysis.models.targets`) uses torch and transformers. Each name is
imported from the module that owns it.
"""
