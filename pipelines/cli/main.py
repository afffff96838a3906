"""The ``tierflow`` command: tiers, copies, datasets, checkpoints, the cache, the bandwidth model and dev tools.

Every failure ends in one line on stderr and an exit status from the one error map
(:func:`pipelines.core.errors.exit_code`): 2 for a usage or input error the user can fix, 1 for a
job that failed, 130 when interrupted. ``TIERFLOW_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipelines.cli import cache, checkpoints, codec, config, copy, datasets, dev, model
from pipelines.core.errors import exit_code, one_line

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tierflow`` command."""
    parser = argparse.ArgumentParser(prog="tierflow", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="tier config file (default: $TIERFLOW_CONFIG, else the packaged default)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (config, copy, datasets, checkpoints, codec, cache, model, dev):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tierflow`` console script."""
    args = build_parser().parse_args(argv)
    name = " ".join(p for p in ("tierflow", args.command, getattr(args, "action", None)) if isinstance(p, str))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one error map: one line, never a traceback
        if os.environ.get("TIERFLOW_DEBUG"):
            raise
        print(f"{name}: {one_line(exc)}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
