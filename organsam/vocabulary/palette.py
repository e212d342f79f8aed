"""The one colour rule for organ labels, used by ``overview.png`` and the viewer: label value ``v`` is drawn in
``PALETTE[(v - 1) % len(PALETTE)]`` (RGB, 0..255)."""

from __future__ import annotations

__all__ = ["PALETTE", "label_color"]

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
    (128, 128, 128),
)


def label_color(value: int) -> tuple[int, int, int]:
    """RGB colour of label value ``value`` (>= 1)."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]
