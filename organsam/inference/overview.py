"""A quick-look PNG: axial and coronal slices with coloured organ overlays and a legend, in radiological display
orientation (axial: anterior up, patient's right on the image's left; coronal: superior up), with orientation
letters. Slice numbers are shown 1-based in display order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from organsam.preprocessing.orientation import display_slice

__all__ = ["HEADER_PX", "render_overview"]

#: Height of the caption band above the panels (captions never lie on the image).
HEADER_PX = 20
_YELLOW = (255, 255, 0)


def _overlay(
    gray: np.ndarray, labels: np.ndarray, colours: Mapping[int, tuple[int, int, int]], alpha: float
) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    for v in np.unique(labels):
        if v == 0 or int(v) not in colours:
            continue
        sel = labels == v
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.array(colours[int(v)], dtype=np.float32)
    return rgb.clip(0, 255).astype(np.uint8)


def _letters(
    draw: ImageDraw.ImageDraw, x0: int, y0: int, w: int, h: int, top: str, bottom: str, outside: bool = False
) -> None:
    """Orientation letters at the middle of each side of the panel at (x0, y0) of size (w, h); ``outside`` puts
    the top and bottom letters just beyond the panel (a thin strip has no room for them)."""
    draw.text((x0 + w // 2 - 3, y0 - 14 if outside else y0 + 2), top, fill=_YELLOW)
    draw.text((x0 + w // 2 - 3, y0 + h + 2 if outside else y0 + h - 13), bottom, fill=_YELLOW)
    draw.text((x0 + 3, y0 + h // 2 - 6), "R", fill=_YELLOW)  # radiological: the patient's right on the left
    draw.text((x0 + w - 10, y0 + h // 2 - 6), "L", fill=_YELLOW)


def render_overview(
    display: np.ndarray,
    labels: np.ndarray,
    legend: Mapping[int, tuple[str, tuple[int, int, int]]],
    spacing: tuple[float, float, float],
    path: str | Path,
    alpha: float = 0.45,
    ijk_axis: Callable[[int], tuple[str, bool]] | None = None,
) -> Path:
    """Write a PNG with the axial slice and the coronal plane through the labelled region's centre.

    Captions sit in a band above the panels, orientation letters on each side (axial A/P/R/L, coronal S/I/R/L),
    and a coronal plane thinner than the axial panel (a thin slab) is centred beside it at its true aspect.

    Args:
        display: (Z, Y, X) uint8 display intensities (canonical layout).
        labels: (Z, Y, X) label volume.
        legend: label value -> (name, RGB colour) for the overlay and the legend.
        spacing: (sz, sy, sx) mm, for the coronal aspect ratio.
        path: output file (written atomically).
        ijk_axis: canonical axis -> (the input's voxel axis "i"/"j"/"k", reversed) (``Volume.ijk_axis``): the
            captions then number the planes as the input file does, as a viewer of that file shows them.

    Returns:
        The written path.
    """
    Z, Y, X = labels.shape
    colours = {v: c for v, (_, c) in legend.items()}
    fg = np.argwhere(labels > 0)
    cz, cy, _ = fg.mean(axis=0).astype(int) if len(fg) else (Z // 2, Y // 2, X // 2)
    # radiological display: axial anterior up, coronal superior up, patient's right on the image's left
    axial = _overlay(display_slice(display, "axial", cz), display_slice(labels, "axial", cz), colours, alpha)
    cor = _overlay(display_slice(display, "coronal", cy), display_slice(labels, "coronal", cy), colours, alpha)
    h = 384
    ax_img = Image.fromarray(axial).resize((max(1, round(h * X * spacing[2] / (Y * spacing[1]))), h))
    cor_h = max(1, round(Z * spacing[0] / (X * spacing[2]) * ax_img.width))
    cor_img = Image.fromarray(cor).resize((ax_img.width, min(cor_h, 4 * h)))
    legend_w = 220
    body = max(ax_img.height, cor_img.height, 18 * len(legend) + 20)
    canvas = Image.new("RGB", (ax_img.width + cor_img.width + legend_w, HEADER_PX + body))
    cor_y = HEADER_PX + max(0, (ax_img.height - cor_img.height) // 2)
    canvas.paste(ax_img, (0, HEADER_PX))
    canvas.paste(cor_img, (ax_img.width, cor_y))
    draw = ImageDraw.Draw(canvas)
    where = f" z={cz}, coronal y={cy}"
    if ijk_axis is not None:  # the planes as the input file numbers them
        (la, ra), (lc, rc) = ijk_axis(0), ijk_axis(1)
        where = f" {la}={Z - 1 - cz if ra else cz}, coronal {lc}={Y - 1 - cy if rc else cy}"
    draw.text((4, 4), f"axial{where}", fill=_YELLOW)
    _letters(draw, 0, HEADER_PX, ax_img.width, ax_img.height, "A", "P")
    _letters(
        draw, ax_img.width, cor_y, cor_img.width, cor_img.height, "S", "I", outside=cor_img.height < ax_img.height - 40
    )
    x0 = ax_img.width + cor_img.width + 10
    for i, (v, (name, colour)) in enumerate(sorted(legend.items())):
        y = HEADER_PX + 10 + 18 * i
        draw.rectangle([x0, y, x0 + 12, y + 12], fill=colour)
        draw.text((x0 + 18, y), f"{v} {name}", fill=(255, 255, 255))
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    canvas.save(tmp, format="PNG")
    tmp.replace(out)
    return out
