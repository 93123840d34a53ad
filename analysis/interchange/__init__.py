"""Other tools' file formats: the paper's per-sample statistics files, read into the cache and
written out of it."""
