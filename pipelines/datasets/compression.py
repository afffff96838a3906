"""zstd for Tierflow: safe streaming compression and decompression, dictionaries, and measurements.

Every frame Tierflow writes carries a content checksum and its content size: python-zstandard's
defaults write neither, and then most single-bit flips decode silently to wrong bytes. Reading is
frame by frame, so concatenated frames are all decoded (``zstd.decompress`` returns only the
first), a truncated frame is an error (a plain stream reader returns the short data), and the
declared size of each frame is checked against a limit *before* it is decoded, which refuses a
decompression bomb without allocating it.

The planner decides whether and how hard to compress from :func:`measure_levels` (see
:func:`pipelines.model.codecs.choose_compression`); measuring on a sample of the real data matters,
because text compresses ~3x while already-compressed Parquet gains ~1.2x.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from pipelines.core.errors import IntegrityError
from pipelines.core.state import written_whole

if TYPE_CHECKING:
    import zstandard

    from pipelines.model.codecs import CodecSample
    from pipelines.transfer.progress import Progress

__all__ = [
    "DEFAULT_LEVELS",
    "CodecStats",
    "CorruptFrameError",
    "DecompressionLimitError",
    "compress_file",
    "compressor",
    "decompress_file",
    "iter_decompressed",
    "measure_levels",
    "read_sample",
    "train_dictionary",
]

#: Bytes handed to zstd per call: large enough for full speed, small enough to keep memory flat.
IO_CHUNK = 1 << 20
#: With no explicit limit a frame may expand at most this much (real text: 3-20x; zeros: ~30,000x) ...
MAX_RATIO = 1000
#: ... or to this many bytes, whichever is larger.
LIMIT_FLOOR = 256 * 2**20
#: Input fed per call to a frame that does not declare its size, so one call cannot explode in memory.
UNKNOWN_SIZE_FEED = 4096
#: Dictionary size used when none is given (zstd's own default, 110 KiB).
DICTIONARY_BYTES = 112_640
LEVELS = range(1, 20)
#: Skippable frames (RFC 8878 §3.1.2): magic 0x184D2A50-0x184D2A5F, then a 4-byte length and user data.
SKIPPABLE_MAGIC = 0x184D2A50
SKIPPABLE_MASK = 0xFFFFFFF0

#: Longest zstd frame header (magic 4 + descriptor 1 + window 1 + dictionary id 4 + content size 8).
FRAME_HEADER_MAX = 18


class CorruptFrameError(IntegrityError, ValueError):
    """A zstd stream that does not decode to exactly what it declares; the message names the file."""


class DecompressionLimitError(IntegrityError, ValueError):
    """A zstd stream that would expand past the allowed size (a decompression bomb); names the file."""


@dataclass(frozen=True)
class CodecStats:
    """Bytes in and out of one compression or decompression, and the seconds it took."""

    raw_bytes: int
    compressed_bytes: int
    seconds: float

    @property
    def ratio(self) -> float:
        """Raw bytes per compressed byte."""
        return self.raw_bytes / self.compressed_bytes if self.compressed_bytes else 0.0

    @property
    def raw_bps(self) -> float:
        """Raw bytes per second."""
        return self.raw_bytes / self.seconds if self.seconds > 0 else 0.0


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ValueError(f"zstd level must be an integer from 1 to 19, got {level!r}")
    return level


def compressor(level: int = 3, threads: int = 0, dictionary: bytes | None = None) -> zstandard.ZstdCompressor:
    """A compressor that always writes the frame checksum and content size.

    ``threads`` is zstd's worker count: 0 = one per CPU, 1 = single-threaded.
    """
    import zstandard

    workers = threads or (os.cpu_count() or 1)
    return zstandard.ZstdCompressor(
        level=_check_level(level),
        threads=workers if workers > 1 else 0,
        write_checksum=True,
        write_content_size=True,
        write_dict_id=True,
        dict_data=zstandard.ZstdCompressionDict(dictionary) if dictionary else None,
    )


def compress_file(src: str, dst: str, level: int = 3, threads: int = 0, dictionary: bytes | None = None) -> CodecStats:
    """Compress the file ``src`` into one zstd frame at ``dst`` (written whole: a temporary name, then a rename)."""
    from pipelines.transfer.progress import Progress

    size = os.path.getsize(src)
    cctx = compressor(level, threads, dictionary)
    start = time.perf_counter()
    progress = Progress(size, f"compress {os.path.basename(src)}", 5.0)
    try:
        with open(src, "rb") as fin, written_whole(dst) as fout:
            _, written = cctx.copy_stream(
                cast(BinaryIO, _Counted(fin, progress)),  # copy_stream only calls read()
                fout,
                size=size,
                read_size=IO_CHUNK,
                write_size=IO_CHUNK,
            )
    finally:
        progress.close()
    return CodecStats(size, written, time.perf_counter() - start)


class _Counted:
    """A file read through, its bytes counted into a progress (one call per IO_CHUNK read)."""

    def __init__(self, fh: BinaryIO, progress: Progress) -> None:
        self.fh, self.progress = fh, progress

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.progress.add(len(data), objects=0)
        return data


def iter_decompressed(
    src: BinaryIO,
    name: str,
    dictionary: bytes | None = None,
    limit: int | None = None,
    compressed_size: int | None = None,
) -> Iterator[bytes]:
    """Decode every frame of ``src`` in order, checking each one completely.

    ``limit`` caps the total decoded bytes; by default it is ``MAX_RATIO`` x ``compressed_size``
    (at least ``LIMIT_FLOOR``). A frame's declared size is checked against the limit before the
    frame is decoded.

    Skippable frames (user data any decoder passes over, as ``zstd -d`` does) are skipped.

    Raises:
        CorruptFrameError: Not zstd, a checksum mismatch, a truncated frame, or a size that differs
            from the frame header (``name`` and the frame number in the message).
        DecompressionLimitError: The output would exceed the limit.
    """
    import zstandard

    if limit is None:
        limit = max(MAX_RATIO * (compressed_size or 0), LIMIT_FLOOR)
    dctx = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(dictionary) if dictionary else None)
    pending = b""
    total = 0
    frame = 0
    while True:
        while len(pending) < FRAME_HEADER_MAX:
            more = src.read(IO_CHUNK)
            if not more:
                break
            pending += more
        if not pending:
            if frame == 0:
                raise CorruptFrameError(f"{name}: empty file, not a zstd stream")
            return
        frame += 1
        if len(pending) >= 4 and int.from_bytes(pending[:4], "little") & SKIPPABLE_MASK == SKIPPABLE_MAGIC:
            pending = _skip_frame(src, pending, name, frame)  # user data the format lets any reader skip
            continue
        try:
            params = zstandard.get_frame_parameters(pending)
        except zstandard.ZstdError as exc:
            raise CorruptFrameError(f"{name}: frame {frame} has no valid zstd header ({exc})") from None
        declared = params.content_size if params.content_size != zstandard.CONTENTSIZE_UNKNOWN else None
        if declared is not None and total + declared > limit:
            raise DecompressionLimitError(
                f"{name}: frame {frame} declares {declared:,} B, past the limit of {limit:,} B "
                f"({total:,} B already decoded); refused as a decompression bomb"
            )
        obj = dctx.decompressobj()
        produced = 0
        while not obj.eof:
            if pending:
                feed = pending if declared is not None else pending[:UNKNOWN_SIZE_FEED]
                pending = pending[len(feed) :]
            else:
                feed = src.read(IO_CHUNK if declared is not None else UNKNOWN_SIZE_FEED)
                if not feed:
                    raise CorruptFrameError(f"{name}: frame {frame} is truncated after {produced:,} decoded bytes")
            try:
                out = obj.decompress(feed)
            except zstandard.ZstdError as exc:
                raise CorruptFrameError(f"{name}: frame {frame} is corrupt ({exc})") from None
            produced += len(out)
            if total + produced > limit:
                raise DecompressionLimitError(f"{name}: output passes the limit of {limit:,} B; refused")
            if out:
                yield out
        pending = obj.unused_data + pending
        if declared is not None and produced != declared:
            raise CorruptFrameError(f"{name}: frame {frame} decoded to {produced:,} B, its header says {declared:,}")
        total += produced


def _skip_frame(src: BinaryIO, pending: bytes, name: str, frame: int) -> bytes:
    """Pass over one skippable frame (magic, 4-byte little-endian length, that many bytes); returns what follows."""
    if len(pending) < 8:
        raise CorruptFrameError(f"{name}: skippable frame {frame} is truncated in its header")
    left = 8 + int.from_bytes(pending[4:8], "little")
    while len(pending) < left:
        left -= len(pending)
        pending = src.read(max(IO_CHUNK, min(left, 1 << 24)))
        if not pending:
            raise CorruptFrameError(f"{name}: skippable frame {frame} is truncated")
    return pending[left:]


def decompress_file(src: str, dst: str, dictionary: bytes | None = None, limit: int | None = None) -> CodecStats:
    """Decode every frame of ``src`` into ``dst`` (a temporary name, renamed once the whole stream checked out)."""
    size = os.path.getsize(src)
    start = time.perf_counter()
    written = 0
    with open(src, "rb") as fin, written_whole(dst) as fout:
        for chunk in iter_decompressed(fin, src, dictionary, limit, compressed_size=size):
            fout.write(chunk)
            written += len(chunk)
    return CodecStats(written, size, time.perf_counter() - start)


def train_dictionary(samples: Sequence[bytes], size: int = DICTIONARY_BYTES) -> bytes:
    """Train a zstd dictionary on sample records (small-record data gains most from one).

    Raises:
        ValueError: Too few or too small samples to train on.
    """
    import zstandard

    if len(samples) < 8:
        raise ValueError(f"need at least 8 sample records to train a dictionary, got {len(samples)}")
    try:
        return zstandard.train_dictionary(size, list(samples)).as_bytes()
    except zstandard.ZstdError as exc:
        raise ValueError(f"cannot train a zstd dictionary on {len(samples)} samples: {exc}") from None


DEFAULT_LEVELS = (1, 3, 9, 19)
#: Largest sample measured; enough for stable speed, small enough to measure in about a second.
SAMPLE_BYTES = 16 * 2**20


def read_sample(path: str, size: int = SAMPLE_BYTES) -> bytes:
    """Up to ``size`` bytes from the start of a local file."""
    with open(path, "rb") as fh:
        return fh.read(size)


def measure_levels(sample: bytes, levels: Sequence[int] = DEFAULT_LEVELS, threads: int = 0) -> list[CodecSample]:
    """Compress ``sample`` at each level (frames with checksum and content size) and measure speed and ratio.

    ``threads`` is zstd's worker count (0 = one per CPU, as the compressor would run).
    """
    import zstandard

    from pipelines.model.codecs import CodecSample

    if not sample:
        raise ValueError("cannot measure compression on an empty sample")
    workers = threads or (os.cpu_count() or 1)
    out = []
    for level in levels:
        compressor = zstandard.ZstdCompressor(
            level=level, threads=workers, write_checksum=True, write_content_size=True
        )
        start = time.perf_counter()
        compressed = compressor.compress(sample)
        seconds = max(time.perf_counter() - start, 1e-9)
        out.append(CodecSample(level=level, compress_bps=len(sample) / seconds, ratio=len(sample) / len(compressed)))
    return out
