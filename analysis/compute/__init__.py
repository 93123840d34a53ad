"""The computation: per-sample gradients, their exact spectral statistics and cosines, batching,
tokenisation and the cost model of the routes. With model loading, the only torch user; it knows
nothing of the cache, the datasets' files or the runs that call it."""
