"""/docs renders with no network: the real intake process (`python -m services.intake
serve` on the test's database and broker) opened in Debian's headless Chromium, every
host but 127.0.0.1 unresolvable. The screenshot is not blank, and the DOM Swagger UI
built holds the operations and the webhooks."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.stack import free_port
from tests.support import Infra, serving_intake

WINDOW = (1280, 900)


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail(
            "chromium is not on PATH, so /docs cannot be rendered. `make install` installs "
            "it (deploy/local/bootstrap.sh); or run `apt-get install chromium`.",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="module")
def intake_url(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
    }
    log_path = tmp_path_factory.mktemp("intake") / "intake.log"
    with serving_intake(env, port, log_path) as base_url:
        yield base_url


def _browse(url: str, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        # No network but the service: a CDN asset would fail to load (and the page stay blank).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://0.0.0.0:9",
        "--proxy-bypass-list=127.0.0.1",
        # Let Swagger UI fetch /openapi.json and render before the page is captured.
        "--virtual-time-budget=15000",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *mode,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_docs_dom_holds_the_operations_and_webhooks(intake_url: str, tmp_path: Path) -> None:
    done = _browse(f"{intake_url}/docs", tmp_path, "--dump-dom")
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Failed to load API definition" not in dom
    assert 'class="swagger-ui' in dom, dom[:2000]
    assert dom.count("opblock-summary") >= 5, "Swagger UI rendered no operations"
    for path in ("/v1/complaints", "/v1/complaints/{ticket_no}/feedback"):
        assert f'data-path="{path}"' in dom, path
    assert "Webhooks" in dom and "complaint.acknowledged" in dom
    assert "Wallet complaints: intake API" in dom


def test_docs_screenshot_is_not_blank(intake_url: str, tmp_path: Path) -> None:
    shot = tmp_path / "docs.png"
    done = _browse(f"{intake_url}/docs", tmp_path, f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == WINDOW
    inked = sum(1 for p in pixels if p < 0xF0F0F0)
    colours = len(set(pixels))
    # A blank page is one colour; Swagger UI's page has text, bars and coloured verbs.
    assert inked > 0.02 * width * height, inked
    assert colours > 50, colours
    # The verbs' colours (POST green, GET blue) are on the page.
    assert any(_near(p, 0x49CC90) for p in pixels), "no POST-green pixel"
    assert any(_near(p, 0x61AFFE) for p in pixels), "no GET-blue pixel"


def _near(pixel: int, colour: int, tolerance: int = 12) -> bool:
    return all(
        abs(((pixel >> shift) & 0xFF) - ((colour >> shift) & 0xFF)) <= tolerance
        for shift in (16, 8, 0)
    )


def decode_png(data: bytes) -> tuple[int, int, list[int]]:
    """Width, height and 0xRRGGBB pixels of an 8-bit RGB or RGBA PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[int] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        pixels.extend(
            (line[i] << 16) | (line[i + 1] << 8) | line[i + 2] for i in range(0, stride, channels)
        )
        previous = line
    return width, height, pixels
