"""The one exception type for mistakes a user can fix by editing a file or a variable.

CLIs catch it and print its message on one line; anything else is a bug and keeps
its traceback.
"""


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message names where and what was expected."""


def cli_main(main):
    """Decorate a CLI entry point: a ConfigError becomes one ``error: ...`` line and exit status 2; a reader
    that stops reading (``| head``) ends the command quietly, as Unix tools do, not with a traceback."""
    import functools
    import os
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing left to flush at exit
            return 141                                                      # 128 + SIGPIPE, as a shell says
    return wrapper
