"""Services the explorer's App owns: reading the cache and running computations.

Plain objects, not widgets: they start thread workers on a DOM node and post typed messages
(app/tui/messages.py) to it, so widgets never reach into the App to read or compute.
"""
