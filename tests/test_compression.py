"""zstd streaming: frames always checked, every frame decoded, bombs refused before they expand."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import zstandard

from pipelines.datasets.compression import (
    CorruptFrameError,
    DecompressionLimitError,
    compress_file,
    compressor,
    decompress_file,
    iter_decompressed,
    train_dictionary,
)

pytestmark = pytest.mark.unit


def text(n_lines: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = ["tier", "shard", "cache", "token", "stream", "model"]
    return b"".join(
        json.dumps({"id": i, "text": " ".join(rng.choices(words, k=rng.randint(3, 40)))}).encode() + b"\n"
        for i in range(n_lines)
    )


def decode(data: bytes, **kw) -> bytes:
    return b"".join(iter_decompressed(io.BytesIO(data), "test.zst", **kw))


@pytest.mark.parametrize("level", [1, 3, 9, 19])
def test_file_round_trip_at_each_level(tmp_path: Path, level: int) -> None:
    raw = tmp_path / "in.jsonl"
    raw.write_bytes(text(20_000))
    stats = compress_file(str(raw), str(tmp_path / "in.jsonl.zst"), level=level, threads=2)
    params = zstandard.get_frame_parameters((tmp_path / "in.jsonl.zst").read_bytes())
    assert params.content_size == raw.stat().st_size and params.has_checksum
    assert stats.ratio > 2
    back = decompress_file(str(tmp_path / "in.jsonl.zst"), str(tmp_path / "out.jsonl"))
    assert (tmp_path / "out.jsonl").read_bytes() == raw.read_bytes() and back.raw_bytes == raw.stat().st_size


def test_concatenated_frames_are_all_decoded() -> None:
    a, b = text(500, 1), text(700, 2)
    joined = compressor(3, 1).compress(a) + compressor(5, 1).compress(b)
    assert zstandard.ZstdDecompressor().decompress(joined) == a  # the library's one-shot call drops frame 2
    assert decode(joined) == a + b


def skippable(payload: bytes, nibble: int = 0) -> bytes:
    """A skippable frame (RFC 8878 3.1.2): magic 0x184D2A5?, 4-byte little-endian length, user data."""
    return (0x184D2A50 | nibble).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


def test_skippable_frames_are_skipped_as_zstd_does(tmp_path: Path) -> None:
    """Valid skippable frames anywhere in the stream decode to nothing, as with `zstd -d` (#17 item 10)."""
    import shutil
    import subprocess

    a, b = text(300, 1), text(400, 2)
    stream = (
        skippable(b"meta") + compressor(3, 1).compress(a) + skippable(b"", 0xF) + skippable(bytes(3 * 2**20), 7)
    ) + compressor(3, 1).compress(b)
    assert decode(stream) == a + b
    assert decode(skippable(b"only user data")) == b""
    if shutil.which("zstd"):  # the reference decoder agrees, where it is installed
        (tmp_path / "s.zst").write_bytes(stream)
        assert subprocess.run(["zstd", "-dc", str(tmp_path / "s.zst")], capture_output=True, check=True).stdout == a + b
    with pytest.raises(CorruptFrameError, match="skippable frame 2 is truncated"):
        decode(compressor(3, 1).compress(a) + skippable(b"payload")[:-2])


def test_every_single_bit_flip_is_detected_or_harmless() -> None:
    data = text(2000)
    frame = compressor(3, 1).compress(data)
    rng = random.Random(5)
    for _ in range(300):
        bad = bytearray(frame)
        pos = rng.randrange(len(bad))
        bad[pos] ^= 1 << rng.randrange(8)
        try:
            out = decode(bytes(bad))
        except CorruptFrameError:
            continue
        assert out == data, f"bit flip at byte {pos} decoded silently to different bytes"


@pytest.mark.parametrize("cut", [1, 5, 100, 0.5])
def test_truncated_frame_is_an_error(cut: float) -> None:
    frame = compressor(3, 1).compress(text(3000))
    n = int(len(frame) * cut) if isinstance(cut, float) else len(frame) - cut
    with pytest.raises(CorruptFrameError, match=r"test\.zst: frame 1"):
        decode(frame[:n])


def test_not_zstd_and_empty_are_errors() -> None:
    with pytest.raises(CorruptFrameError, match="no valid zstd header"):
        decode(b"this is plain text, not zstd at all")
    with pytest.raises(CorruptFrameError, match="empty"):
        decode(b"")


class Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def test_bomb_with_declared_size_is_refused_before_decoding() -> None:
    out = io.BytesIO()
    zstandard.ZstdCompressor(level=1, write_content_size=True).copy_stream(Zeros(2**30), out, size=2**30)
    bomb = out.getvalue()
    assert len(bomb) < 64 * 1024  # a tiny input ...
    with pytest.raises(DecompressionLimitError, match="declares 1,073,741,824 B"):
        next(iter_decompressed(io.BytesIO(bomb), "bomb.zst", compressed_size=len(bomb)))


def test_bomb_without_declared_size_stops_at_the_limit() -> None:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as writer:
        for _ in range(64):
            writer.write(bytes(2**20))
    bomb = out.getvalue()
    produced = 0
    with pytest.raises(DecompressionLimitError, match="passes the limit"):
        for chunk in iter_decompressed(io.BytesIO(bomb), "bomb.zst", limit=8 * 2**20):
            produced += len(chunk)
    assert produced <= 8 * 2**20


def test_dictionary_round_trip_and_gain_on_small_records() -> None:
    records = [json.dumps({"id": i, "lang": "en", "text": f"tier shard {i}"}).encode() for i in range(5000)]
    dictionary = train_dictionary(records[:2000], size=16_384)
    plain = sum(len(compressor(3, 1).compress(r)) for r in records[2000:])
    with_dict = [compressor(3, 1, dictionary).compress(r) for r in records[2000:]]
    assert sum(map(len, with_dict)) < plain / 2
    assert [decode(f, dictionary=dictionary) for f in with_dict] == records[2000:]
    with pytest.raises(CorruptFrameError):
        decode(with_dict[0])  # without the dictionary the frame cannot be decoded


@pytest.mark.parametrize("level", [0, 20, "3", True])
def test_bad_level_is_refused(level: object) -> None:
    with pytest.raises(ValueError, match="zstd level"):
        compressor(level)  # type: ignore[arg-type]


def test_cli_round_trip_and_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli.main import main

    raw = tmp_path / "a.jsonl"
    raw.write_bytes(text(5000))
    assert main(["compress", str(raw), str(tmp_path / "a.zst"), "--level", "9", "--threads", "2"]) == 0
    assert "ratio" in capsys.readouterr().out
    assert main(["decompress", str(tmp_path / "a.zst"), str(tmp_path / "b.jsonl")]) == 0
    assert (tmp_path / "b.jsonl").read_bytes() == raw.read_bytes()
    cut = tmp_path / "cut.zst"
    cut.write_bytes((tmp_path / "a.zst").read_bytes()[:-3])
    assert main(["decompress", str(cut), str(tmp_path / "c.jsonl")]) == 1
    assert "cut.zst: frame 1 is truncated" in capsys.readouterr().err
    assert not (tmp_path / "c.jsonl").exists() and not list(tmp_path.glob("*tierflow-tmp*"))
    assert main(["compress", str(tmp_path / "missing"), str(tmp_path / "x.zst")]) == 2
    assert "missing: no such file" in capsys.readouterr().err
