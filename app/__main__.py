"""``python -m layerscope.app``: the same as the ``layerscope`` command."""

from layerscope.app.cli import main

raise SystemExit(main())
