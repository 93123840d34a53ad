"""Widgets of the explorer, one per module, so each can be read and tested on its own."""
