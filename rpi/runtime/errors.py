"""The Pi side's error: a kind of the toolchain's UserError, so one CLI boundary (``contract.run_cli``)
serves every command line, on the Pi and on the host."""
from __future__ import annotations

from contract import UserError


class RpiError(UserError):
    """An error the user can fix (bad model, source, host or key); printed as one line, exit code 2."""
