"""The other libraries' internals the front ends rely on, one module per library.

Why: Textual and plotext offer no public way to do a few things the explorer needs (a footer
that fits its row, a figure of a widget's own, knowing the app is quitting), so those few uses
reach into their private names, which a new version may change without notice. Each use lives
in the module of its library here, beside the list of what it relies on; ``tests/test_compat.py``
checks that list against the installed version and fails naming the version and what is gone,
rather than a chart or the footer breaking somewhere in the explorer. Everything else imports
these modules, never a library's private names.
"""
