"""The Cosines tab: a run's layer-by-layer cosine heatmap and the pane that reads it."""
