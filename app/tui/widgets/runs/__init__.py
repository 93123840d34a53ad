"""The Runs tab: the tree of the runs in the cache and the highlighted run's detail line."""
