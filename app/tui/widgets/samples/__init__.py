"""The Samples tab: the sortable table of a run's samples, their scatter, and the one-sample
curve the sample detail screen draws."""
