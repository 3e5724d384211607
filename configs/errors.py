"""The one exception type for mistakes a user can fix by editing a file or a variable.

CLIs catch it and print its message on one line; anything else is a bug and keeps
its traceback.
"""


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message names where and what was expected."""
