"""The ``commy`` command line.

Subcommands live in `commy.commands`: every module there that defines
``add_commands(subparsers)`` is picked up, so a feature adds its commands without
editing this file. Errors go to stderr without a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from commy import __version__
from commy.errors import CommyError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commy",
        description="commy: shared-memory coordination for Python (services of typed variables).",
    )
    parser.add_argument("--version", action="version", version=f"commy {__version__}")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $COMMY_CONFIG, ./commy.toml, ~/.config/commy/commy.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import commy.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"commy.commands.{info.name}")
        add = getattr(module, "add_commands", None)
        if add is not None:
            add(sub)
    _global_options_everywhere(parser)
    return parser


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--config`` / ``--debug`` after the subcommand too (``commy var get ... --config x``).

    SUPPRESS defaults: a subcommand that did not see the option leaves the global value alone.
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in set(action.choices.values()):
            names = {opt for a in sub._actions for opt in a.option_strings}
            if "--config" not in names:
                sub.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                                 help="config file (as before the command)")
            if "--debug" not in names:
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show tracebacks and debug logs")
            _global_options_everywhere(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("COMMY_DEBUG"))
    logging.basicConfig(
        level=logging.DEBUG if debug else os.environ.get("COMMY_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CommyError as exc:
        if debug:
            raise
        print(f"commy: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            raise
        print(f"commy: internal error: {exc!r} (run with --debug for a traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
