"""The Setup tab: the model and dataset pickers, the settings form, and the parts they share
(the list-or-path base, the glyph-marked check list and radio button)."""
