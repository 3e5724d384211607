"""The one exception type for mistakes a user can fix by editing a file or a variable.

CLIs catch it and print its message on one line; anything else is a bug and keeps
its traceback.
"""


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message names where and what was expected."""


def cli_main(main):
    """Decorate a CLI entry point: a ConfigError becomes one ``error: ...`` line and exit status 2."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return wrapper
