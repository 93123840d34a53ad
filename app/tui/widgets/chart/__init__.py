"""The Chart tab: the pane that reads and overlays the runs' curves, the layer chart, the
spectrum chart (w) and the comparison table under them."""
