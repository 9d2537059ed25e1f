"""The error boundary shared by the Pi-side and host-side command lines (standard library only)."""
from __future__ import annotations

import sys
from typing import Callable


class RpiError(Exception):
    """An error the user can fix (bad model, source, host or key); printed as one line, exit code 2."""


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Turn an RpiError into one ``error: ...`` line on stderr and exit code 2."""
    try:
        code = main(argv)
    except RpiError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(code or 0)
