"""The one exception sftprep raises for anything the user can fix.

The CLI prints it as a single line and exits 1 (2 for a ConfigError); any other exception is a bug and keeps its
traceback.
"""

from schemas.config_fields import ConfigProblems
from sftprep.drop_reasons import DropReason


class SftprepError(Exception):
    """A problem with the user's input or config; the message says what, where and how to fix it."""


class ConfigError(ConfigProblems, SftprepError):
    """Bad config values or combinations (YAML, flags or Python), one line each; the CLI exits 2."""

    title = "invalid build config"


class RowError(SftprepError):
    """One input row cannot be used. `reason` is the short key it is counted under with --on-error skip."""

    def __init__(self, reason, message: str, source: str = "", row: int | None = None):
        self.reason = DropReason(reason).value  # a DropReason, or its value; anything else is a bug
        self.detail = message
        self.source = source
        self.row = row
        super().__init__(self._text())

    def __reduce__(self):
        """Rebuild from the four fields: a worker process sends RowErrors back pickled."""
        return RowError, (self.reason, self.detail, self.source, self.row)

    def located(self, source: str, row: int) -> "RowError":
        """The same error, naming the file and the (0-based) row."""
        return RowError(self.reason, self.detail, source, row)

    def _text(self) -> str:
        where = f"{self.source}, row {self.row}: " if self.source else ""
        return f"{where}{self.detail} [{self.reason}]"
