"""Plumbing shared by the ``ckan harvester`` commands.

* :func:`guarded` runs a command body in the CKAN app's request context and
  turns the exceptions it raises into one error line on stderr and a non-zero
  exit status, never a traceback.
* :func:`action` calls a harvest action as the site user (a sysadmin), the
  way every command does; :func:`source_dict` finds a source by id or name.
* Long operations accept a ``progress`` factory, ``progress(items, label)``,
  returning a context manager that iterates ``items`` and has ``update(n)``:
  :func:`progress_bars` gives ``click.progressbar`` in a terminal and None
  otherwise (then :class:`NoProgress` shows nothing and output stays parseable).
"""
from __future__ import annotations

import functools
import sys
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Iterator, NoReturn, Optional, Sequence

import click
from ckan import model
from ckan.plugins import toolkit

#: The metavar of the arguments that take a source's id or name.
SOURCE_ARG = "SOURCE_ID_OR_NAME"

#: ``progress(items, label)``: see the module docstring.
Progress = Callable[[Sequence[Any], str], Any]


class SourceNotFound(toolkit.ObjectNotFound):
    """No harvest source has the id or name given on the command line."""

    def __init__(self, reference: str) -> None:
        super().__init__("Source <{}> not found.".format(reference))
        self.reference = reference

    def __str__(self) -> str:
        return "Source <{}> not found.".format(self.reference)


class DefaultCommandGroup(click.Group):
    """A click group that runs its default command when the first argument is
    not the name of one of its subcommands.

    ``ckan harvester job SOURCE [--force]`` keeps working as a plain command
    while ``job`` also has subcommands (``job NAME ...``): other modules add
    theirs with ``job_command.add_command(...)``. A source named like a
    subcommand is reached through the default command's name (e.g.
    ``job start NAME``). ``job --help`` shows the group's help.
    """

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else None
        if first not in self.commands and first not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


class NoProgress:
    """The silent stand-in for ``click.progressbar`` (not a terminal)."""

    def __init__(self, items: Sequence[Any], label: str = "") -> None:
        self.items = items

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def update(self, n_steps: int) -> None:
        """Nothing to show."""


# -- actions as the site user --------------------------------------------------------


def admin_user() -> dict[str, Any]:
    """The site user (a sysadmin), as ``get_site_user`` returns it."""
    return toolkit.get_action("get_site_user")({"ignore_auth": True}, {})


def site_context(**extra: Any) -> Any:
    """Action context of the CLI: the site user, plus ``extra`` keys."""
    context = {
        "model": model,
        "session": model.Session,
        "user": admin_user()["name"],
    }
    context.update(extra)
    return context


def action(name: str, data_dict: dict[str, Any], **context: Any) -> Any:
    """Call the action ``name`` as the site user (``context``: extra context keys)."""
    return toolkit.get_action(name)(site_context(**context), data_dict)


def source_dict(reference: str) -> dict[str, Any]:
    """The source dataset with this id or name.

    :raises SourceNotFound: there is none
    """
    try:
        return action("harvest_source_show", {"id": reference})
    except toolkit.ObjectNotFound:
        raise SourceNotFound(reference) from None


# -- terminal ------------------------------------------------------------------------


def interactive() -> bool:
    """Whether stdout is a terminal (progress bars are shown only then)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bars() -> Optional[Progress]:
    """A progress-bar factory for a terminal, None otherwise (output stays parseable)."""
    if not interactive():
        return None

    def bar(items: Sequence[Any], label: str) -> Any:
        return click.progressbar(items, label=label, show_pos=True, show_eta=True)

    return bar


def echo(text: str) -> None:
    """Print ``text`` as it is (it ends with its own newline)."""
    click.echo(text, nl=False)


# -- errors --------------------------------------------------------------------------


def abort(message: Any) -> NoReturn:
    """Print ``message`` on stderr and end with click's ``Aborted!`` (status 1)."""
    toolkit.error_shout(message)
    raise click.Abort()


def fail(message: str) -> NoReturn:
    """Print ``message`` on stderr and end with status 1."""
    toolkit.error_shout(message)
    raise click.exceptions.Exit(1)


def _shout_validation(error: Any) -> None:
    toolkit.error_shout("Validation error:")
    for field, message in error.error_summary.items():
        toolkit.error_shout("\t{}: {}".format(field, message))


def _exception_handlers() -> list[tuple[tuple[type[BaseException], ...], Callable[[Any], None]]]:
    """(exception classes, handler) pairs, most specific first."""
    import pika.exceptions
    import redis.exceptions
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from ckanext.harvest import mq
    from ckanext.harvest.logic import HarvestJobExists, HarvestSourceInactiveError

    def validation(error: Any) -> None:
        _shout_validation(error)
        raise click.Abort()

    return [
        ((SourceNotFound, HarvestJobExists, HarvestSourceInactiveError), abort),
        ((toolkit.ValidationError,), validation),
        ((toolkit.NotAuthorized,), lambda e: fail("Not authorized: {}".format(e))),
        ((toolkit.ObjectNotFound,), lambda e: fail("Not found: {}".format(e))),
        ((mq.UnknownBackendError,), lambda e: fail("Configuration error: {}".format(e))),
        ((mq.BrokerError, pika.exceptions.AMQPError, redis.exceptions.RedisError),
         lambda e: fail("Cannot use the queue broker: {}".format(_first_line(e)))),
        ((DBAPIError,), lambda e: fail("Database error: {}".format(_first_line(e.orig)))),
        ((SQLAlchemyError,), lambda e: fail("Database error: {}".format(_first_line(e)))),
    ]


def _first_line(error: Any) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _report(error: Exception) -> None:
    """Turn an exception raised by a command into an error line and an exit status."""
    for classes, handler in _exception_handlers():
        if isinstance(error, classes):
            handler(error)
    fail("Error: {}: {}".format(type(error).__name__, _first_line(error)))


def _app_context() -> ContextManager[Any]:
    """The Flask test request context of the CKAN app loaded by ``ckan``."""
    ctx = click.get_current_context(silent=True)
    app = ctx.meta.get("flask_app") if ctx is not None else None
    return app.test_request_context() if app is not None else nullcontext()


def guarded(with_context: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a command inside the app's request context, reporting its errors."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                with _app_context() if with_context else nullcontext():
                    return func(*args, **kwargs)
            except (click.exceptions.ClickException, click.exceptions.Abort,
                    click.exceptions.Exit, KeyboardInterrupt):
                raise
            except Exception as error:
                _report(error)

        return wrapper

    return decorator
