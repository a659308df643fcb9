"""Bounded decoding: an image file whose header claims more pixels than the limit is refused from its header, before
any large allocation, by both runners (one error line, exit 2, peak RSS under 100 MB); the limit is configurable;
ordinary photos up to 50 megapixels still run."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.bundle import RUNNER
from tests.helpers import REPO, assert_one_line_error

IMAGE = "ILSVRC2012_val_00000347.JPEG"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(path: Path, width: int, height: int, idat: bytes) -> Path:
    """An 8-bit RGB PNG of `width` x `height` with the given IDAT data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def black_png(path: Path, side: int) -> Path:
    """A valid side x side black PNG, built without compressing side * side * 3 bytes: after a full flush, deflate
    writes the same bytes for the same input, so one flushed block of rows is repeated (zeros compress ~1000:1)."""
    row = b"\0" * (1 + 3 * side)  # filter byte + pixels
    rows_per_block = 64
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(row * rows_per_block) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(row * rows_per_block) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(side, rows_per_block)
    tail = compressor.compress(row * rest) + compressor.flush(zlib.Z_FINISH)
    total = len(row) * side
    adler = ((total % 65521) << 16) | 1  # adler32 of `total` zero bytes
    stream = b"\x78\xda" + first + block * (blocks - 1) + tail + struct.pack(">I", adler)
    return png(path, side, side, stream)


def peak_rss_mb(argv: list) -> tuple[subprocess.CompletedProcess, float]:
    """Run argv under GNU time (its own fork of the program, so the figure is the program's) and return the result
    and the program's peak RSS."""
    result = subprocess.run(["/usr/bin/time", "--quiet", "-f", "maxrss_kb %M", *map(str, argv)], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("maxrss_kb "), result.stderr[-2000:]
    result.stderr = "\n".join(lines[:-1]) + "\n"
    return result, int(lines[-1].split()[1]) / 1024


def runners(bundle: Path) -> dict[str, list]:
    return {"edgevit-run": [bundle / RUNNER], "python -m runtime": [sys.executable, "-m", "runtime"]}


@pytest.fixture(scope="module")
def huge_pngs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("huge")
    big = black_png(folder / "black_60000.png", 60_000)
    claims = png(folder / "claims_100000.png", 100_000, 100_000, zlib.compress(b"\0" * 4000, 9))
    claims.write_bytes(claims.read_bytes()[:-12].ljust(1188, b"\0") + _chunk(b"IEND", b""))  # 1,200 bytes
    return {"60000 x 60000": big, "claims 100000 x 100000": claims}


@pytest.mark.parametrize("which", ["60000 x 60000", "claims 100000 x 100000"])
def test_huge_png_refused_from_its_header(which, huge_pngs, int8_bundle):
    path = huge_pngs[which]
    size = path.stat().st_size
    assert (9e6 < size < 12e6) if which.startswith("60000") else size == 1200
    data = path.read_bytes()
    assert struct.unpack(">II", data[16:24]) == ((60_000,) * 2 if which.startswith("60000") else (100_000,) * 2)
    for name, argv in runners(int8_bundle).items():
        result, peak_mb = peak_rss_mb([*argv, "run", int8_bundle, path])
        print(f"{which} ({size} bytes), {name}: exit {result.returncode}, peak RSS {peak_mb:.1f} MB")
        assert result.returncode == 2
        assert_one_line_error(result, "cannot read image", "more than the limit of 100000000 pixels")
        assert peak_mb < 100


def test_limit_is_configurable_and_50_megapixels_run(int8_bundle, images_dir, tmp_path):
    """A 50-megapixel JPEG runs (the same top-5 from both runners); --max-pixels below an image refuses it."""
    with Image.open(images_dir / IMAGE) as photo:
        big = tmp_path / "photo_50mp.jpg"
        photo.convert("RGB").resize((8660, 5774), Image.Resampling.BILINEAR).save(big, quality=90)
    answers = {}
    for name, argv in runners(int8_bundle).items():
        result, peak_mb = peak_rss_mb([*argv, "run", int8_bundle, big, "--json"])
        assert result.returncode == 0, result.stderr[-2000:]
        print(f"50 MP JPEG, {name}: peak RSS {peak_mb:.1f} MB")
        answers[name] = [(e["class"], e["label"]) for e in json.loads(result.stdout.splitlines()[-1])[str(big)]]
        small = subprocess.run([*argv, "run", int8_bundle, images_dir / IMAGE, "--max-pixels", "10000"], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
        assert small.returncode == 2
        assert_one_line_error(small, "more than the limit of 10000 pixels")
    assert answers["edgevit-run"] == answers["python -m runtime"] and len(answers["edgevit-run"]) == 5


def test_black_png_is_a_valid_png(tmp_path, huge_pngs):
    """The construction above gives a PNG that decodes: in full where that is cheap, and the 60,000 x 60,000 one's
    pixel stream inflates to zero rows (its first 100 MB)."""
    path = black_png(tmp_path / "black.png", 300)
    with Image.open(path) as image:
        pixels = np.asarray(image)
    assert pixels.shape == (300, 300, 3) and not pixels.any()
    data = huge_pngs["60000 x 60000"].read_bytes()
    (length,) = struct.unpack(">I", data[33:37])
    assert data[37:41] == b"IDAT"
    inflated = zlib.decompressobj().decompress(data[41:41 + length], 100 << 20)
    assert len(inflated) == 100 << 20 and not any(inflated)
