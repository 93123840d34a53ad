"""The Textual explorer and the command line of layerscope."""
