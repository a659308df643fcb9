"""One error type for mistakes a user can act on; CLIs print it as one line and exit non-zero."""

import sys
from collections.abc import Callable


class EdgevitError(Exception):
    """A failure caused by input (arguments, files, devices), reported without a traceback."""


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a CLI entry point: EdgevitError becomes one 'error: ...' line on stderr and exit code 2."""
    try:
        code = main()
    except EdgevitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
