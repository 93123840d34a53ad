"""``python -m layerscope.app``: the same as the ``layerscope`` command."""

import sys

try:
    from layerscope.app.cli import main
    from layerscope.app.cli.exits import EXIT_INTERRUPTED, finish
except KeyboardInterrupt:  # while the package itself loads (2 ms), before main() guards
    print("layerscope: error: interrupted; nothing was changed", file=sys.stderr)
    raise SystemExit(130) from None

status = main()
if status == EXIT_INTERRUPTED:
    # Under `python -m`, CPython ends the process by SIGINT (-2 to a parent process, not 130)
    # when a KeyboardInterrupt ever left code run from a string, such as the methods a dataclass
    # makes while its module is imported, even one caught since. Running code from a string
    # clears that mark; the explorer, which runs `compute` this way, expects 130.
    exec("")
finish(status)
