"""The one mapping from library errors to the command line's messages and exit codes.

Every command of ``mcd-score`` and ``mcd-export`` runs its library call inside
:func:`library_errors`: a usage error (the user's to fix) becomes :class:`click.UsageError`
(exit code 2, with the command's usage line); any other library error becomes a one-line
message and the exit code the error class names in its ``exit_code`` attribute (1 by default;
4 for an output that could not be written, 130 for an interrupted run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import click

from scorer.errors import ScorerError, ScorerUsageError


class CommandFailed(click.ClickException):
    """A library failure as Click shows it: ``prefix`` and the message on stderr, then exit with
    the error's code."""

    def __init__(self, message: str, exit_code: int = 1, prefix: str = "Error: ") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.prefix = prefix

    def show(self, file=None) -> None:
        click.echo(f"{self.prefix}{self.format_message()}", err=True)


@contextlib.contextmanager
def library_errors(usage: tuple[type[Exception], ...] = (ScorerUsageError,),
                   failure: tuple[type[Exception], ...] = (ScorerError,),
                   unexpected: Callable[[Exception], str] | None = None) -> Iterator[None]:
    """Turn the library errors raised inside the block into Click's exits.

    Args:
        usage: Error classes that are the user's to fix: exit code 2.
        failure: Other library error classes: their ``exit_code`` (1 if they have none) and the
            ``cli_prefix`` they name (``"Error: "`` if they name none).
        unexpected: If given, any other exception becomes a failure with this message (for a
            command built on libraries that raise many types, such as the exporter's).
    """
    try:
        yield
    except click.ClickException:
        raise
    except usage as error:
        raise click.UsageError(str(error), click.get_current_context(silent=True)) from error
    except failure as error:
        raise CommandFailed(str(error), getattr(error, "exit_code", 1),
                            getattr(error, "cli_prefix", "Error: ")) from error
    except Exception as error:
        if unexpected is None:
            raise
        raise CommandFailed(unexpected(error)) from error
