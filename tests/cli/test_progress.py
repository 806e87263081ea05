"""The upload progress bar: what it draws, and how rarely."""

from __future__ import annotations

import pytest

from ds_trio.client.progress import ProgressBar, human_bytes


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (3 << 20, "3.0 MiB"),
        (5 << 30, "5.0 GiB"),
        (2048 << 40, "2048.0 TiB"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


def test_known_total() -> None:
    bar = ProgressBar(4 << 20, min_interval=0.1)
    assert bar.advance(1 << 20, now=0.0) == "\r[######------------------]  25% 1.0 MiB / 4.0 MiB"
    assert bar.advance(1 << 20, now=0.05) is None  # too soon: not drawn, still counted
    assert bar.advance(2 << 20, now=0.2) == "\r[########################] 100% 4.0 MiB / 4.0 MiB"
    assert bar.finish().endswith("100% 4.0 MiB / 4.0 MiB\n")


def test_unknown_total_and_padding() -> None:
    bar = ProgressBar(None)
    assert bar.advance(2048, now=0.0) == "\r2.0 KiB sent"
    shorter = ProgressBar(None)
    shorter.advance(1 << 20, now=0.0)
    shorter.sent = 5
    assert shorter.finish() == "\r5 B sent" + " " * 4 + "\n"  # pads over "1.0 MiB sent"


def test_empty_total_is_complete() -> None:
    assert "100%" in ProgressBar(0).finish()
