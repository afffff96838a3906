"""What every command shares: the config from the arguments, opening tiers by name, tables and logging."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import InputError

if TYPE_CHECKING:
    from pipelines.core.config import TierflowConfig, TierKind
    from pipelines.devtools.s3server import EmbeddedS3
    from pipelines.storage.tier import Tier

__all__ = [
    "UsageError",
    "config_from_args",
    "count",
    "embedded_server",
    "emit",
    "open_named",
    "positive_int",
    "print_table",
    "quiet_logging",
    "role",
    "size_arg",
]


class UsageError(InputError):
    """A problem the user can fix; reported in one line, exit status 2."""


def config_from_args(args: argparse.Namespace) -> TierflowConfig:
    """The tier config with calibrated profiles laid over it (``tierflow calibrate`` stores them)."""
    from pipelines.core.config import load_config
    from pipelines.model.calibration import calibrated

    return calibrated(load_config(getattr(args, "config", None)))


def embedded_server(cfg: TierflowConfig) -> EmbeddedS3:
    """The embedded S3 server the config declares; a config without one is a usage error."""
    from pipelines.devtools.s3server import EmbeddedS3, S3ServerError

    try:
        return EmbeddedS3.from_config(cfg)
    except S3ServerError as exc:
        raise UsageError(str(exc)) from None


def open_named(cfg: TierflowConfig, name: str) -> Tier:
    """Open a configured tier by name (an unknown name is a usage error naming the tiers there are)."""
    from pipelines.storage.tier import open_tier

    return open_tier(cfg, name)


def role(cfg: TierflowConfig, name: str | None, kind: TierKind) -> str:
    """``name`` when the user gave one, else the config's tier of ``kind`` (several of one kind must be named)."""
    return name or cfg.primary(kind).name


def emit(args: argparse.Namespace, data: Any, lines: str | Iterable[str]) -> None:
    """A command's result: ``data`` as one JSON document with ``--json``, else the human ``lines``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
        return
    for line in [lines] if isinstance(lines, str) else lines:
        print(line)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 object``, ``2 objects`` (``plural`` when the noun does not take an s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (refused before any I/O)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def size_arg(text: str) -> str:
    """An argparse type: a size with its unit such as '16 MiB', checked before any I/O and kept as given."""
    from pipelines.core.units import UnitError, parse_size

    try:
        parse_size(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None
    return text


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as left-aligned columns, the first row being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def quiet_logging(verbose: bool = False) -> None:
    """Warnings only, as plain lines; Tierflow's own progress and plans too when ``verbose``."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if verbose:
        logging.getLogger("pipelines").setLevel(logging.INFO)
