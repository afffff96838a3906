"""The fast content checksum recorded in manifests and verified at every hop.

xxh3-128 (the ``xxhash`` package): non-cryptographic, designed for detecting accidental
corruption, and faster than the storage it guards (several GB/s per core, see
``benchmarks/checksum_speed.py``). It needs no native extras, unlike CRC32C in botocore, and it is
computed the same way on every tier, so a copy is verified end to end by our own manifest rather
than by whatever checksum a particular S3 server happens to support.
"""

from __future__ import annotations

from typing import BinaryIO

import xxhash

__all__ = ["ALGORITHM", "BLOCK_SIZE", "Hasher", "checksum_bytes", "checksum_file", "checksum_stream"]

ALGORITHM = "xxh3-128"
#: Read size when hashing a stream: large enough to amortise calls, small enough to bound memory.
BLOCK_SIZE = 8 * 2**20
#: Read size when hashing a local file into a reused buffer (fits in L2/L3 better than 8 MiB).
FILE_BLOCK = 2**20


class Hasher:
    """Incremental checksum; ``update`` as bytes pass by, then ``hexdigest``."""

    def __init__(self) -> None:
        self._h = xxhash.xxh3_128()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` to the checksum."""
        self._h.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        """The checksum so far, as 32 hex digits."""
        return self._h.hexdigest()


def checksum_bytes(data: bytes | bytearray | memoryview) -> str:
    """Checksum of an in-memory buffer."""
    return xxhash.xxh3_128_hexdigest(data)


def checksum_stream(fh: BinaryIO, block_size: int = BLOCK_SIZE) -> tuple[str, int]:
    """Checksum and size of everything left in a binary stream, read in bounded blocks."""
    hasher = Hasher()
    while block := fh.read(block_size):
        hasher.update(block)
    return hasher.hexdigest(), hasher.size


def checksum_file(path: str, block_size: int = FILE_BLOCK) -> tuple[str, int]:
    """Checksum and size of a local file, read into one reused buffer (no allocation per block: ~1.5x faster)."""
    hasher = Hasher()
    buf = bytearray(block_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            hasher.update(view[:n])
    return hasher.hexdigest(), hasher.size
