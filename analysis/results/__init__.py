"""Reading results back: comparisons of curves (MAD, relative differences, tests), the paper's
table, spectra, samples as data and ready-made studies. Read-only over the cache."""
