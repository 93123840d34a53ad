"""Modal screens of the explorer (help, sample detail, export, filters), one per module."""
