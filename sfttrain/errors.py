"""The one exception sfttrain raises for a problem the user can fix.

The CLI prints it as a single line "error: ..." and exits with code 1; any other exception is a
bug and keeps its traceback. Messages say what was wrong, what was received, and which flag or
config key to change.
"""

from schemas.config_fields import ConfigProblems


class SfttrainError(Exception):
    """A problem with the user's input (config, build folder, model) rather than a bug."""


class ConfigError(ConfigProblems, SfttrainError):
    """Bad config values or combinations (YAML, flags or Python), one line each; the CLI exits 2."""

    title = "invalid train config"
