"""What the App composes itself around the tabs, present from the first frame: the log panel
(the Log tab), the progress panel docked above the footer and its rows, and the footer."""
