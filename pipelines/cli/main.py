"""The ``tierflow`` command: tiers, copies, datasets, checkpoints, the cache, the bandwidth model and dev tools.

Every failure ends in one line on stderr and an exit status from the one error map
(:func:`pipelines.core.errors.exit_code`): 2 for a usage or input error the user can fix, 1 for a
job that failed, 130 when interrupted. ``TIERFLOW_DEBUG=1`` shows the traceback instead. The
global options (``--config``, ``--json``) are accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from pipelines.cli import cache, checkpoints, codec, config, copy, datasets, dev, model
from pipelines.core.errors import exit_code, one_line

__all__ = ["build_parser", "main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tierflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


class _Version(argparse.Action):
    """``--version``, with the installed version looked up only when asked (importlib.metadata costs ~40 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object, opt: object = None) -> None:
        print(f"tierflow {_version()}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one JSON document on stderr when ``--json`` was given.

    argparse reports a bad argument (an unknown unit, a missing operand) before ``--json`` is parsed,
    so :func:`main` says up front whether the command line asked for JSON; every subcommand's parser
    is of this class (argparse makes them of the parent's).
    """

    json_errors = False  # set on each parser by build_parser()

    def error(self, message: str) -> NoReturn:
        if not self.json_errors:
            super().error(message)
        print(json.dumps({"command": self.prog, "error": message, "exit_code": 2}), file=sys.stderr)
        sys.exit(2)


def _asks_for_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` is among the options (not after a ``--`` that ends them)."""
    words = list(argv)
    return "--json" in (words[: words.index("--")] if "--" in words else words)


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--config`` and ``--json``; under a subcommand they only override what was given before it."""
    config_default: object = None if top else argparse.SUPPRESS
    json_default: object = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        default=config_default,
        help="tier config file (default: $TIERFLOW_CONFIG, else the packaged default)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=json_default,
        help="print the result as one JSON document (errors too, on stderr)",
    )


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """This parser and every parser under it, each once (a command's aliases share its parser)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def _leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser that runs a command (those without subcommands of their own)."""
    for each in _parsers(parser):
        if not any(isinstance(a, argparse._SubParsersAction) for a in each._actions):
            yield each


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    """The argument parser of the ``tierflow`` command; ``json_errors``: usage errors as JSON on stderr."""
    parser = _Parser(prog="tierflow", description=__doc__.splitlines()[0].replace("``", ""))  # no reST in a terminal
    parser.add_argument("--version", action=_Version)
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (config, copy, datasets, checkpoints, codec, cache, model, dev):
        group.register(sub)
    for leaf in _leaves(parser):
        _global_options(leaf, top=False)
        leaf.set_defaults(parser_of_command=leaf)
    for each in _parsers(parser):
        if isinstance(each, _Parser):  # all are: subcommands' parsers take their parent's class
            each.json_errors = json_errors
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tierflow`` console script."""
    parser = build_parser(json_errors=_asks_for_json(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    if extra:  # a mistyped option: the usage of the command it was given to, not the top level's
        args.parser_of_command.error(f"unrecognized arguments: {' '.join(extra)}")
    name = " ".join(p for p in ("tierflow", args.command, getattr(args, "action", None)) if isinstance(p, str))
    from pipelines.transfer.progress import terminal_progress

    try:
        with terminal_progress(enabled=not args.json and sys.stderr.isatty()):  # a live bar on a terminal only
            return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the one error map: one line, never a traceback
        if os.environ.get("TIERFLOW_DEBUG"):
            raise
        code = exit_code(exc)
        if args.json:
            print(json.dumps({"command": name, "error": one_line(exc), "exit_code": code}), file=sys.stderr)
        else:
            print(f"{name}: {one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
