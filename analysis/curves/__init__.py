"""Arithmetic on layer-wise curves: from stored sums to means and intervals, and the tests of
significance between two curves. Torch-free and cache-free, so the cache can return curves and
keep tests without depending on the comparisons that read it."""
