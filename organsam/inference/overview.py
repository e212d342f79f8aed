"""A quick-look PNG: axial and coronal slices with coloured organ overlays and a legend, in radiological display
orientation (axial: anterior up, patient's right on the image's left; coronal: superior up)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from organsam.preprocessing.orientation import display_slice
from organsam.vocabulary.palette import label_color

__all__ = ["render_overview"]



def _overlay(gray: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    for v in np.unique(labels):
        if v == 0:
            continue
        colour = np.array(label_color(v), dtype=np.float32)
        sel = labels == v
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * colour
    return rgb.clip(0, 255).astype(np.uint8)


def render_overview(display: np.ndarray, labels: np.ndarray, table: Mapping[int, str],
                    spacing: tuple[float, float, float], path: str | Path, alpha: float = 0.45) -> Path:
    """Write a PNG with the axial slice and the coronal plane through the labelled region's centre.

    Args:
        display: (Z, Y, X) uint8 display intensities (canonical layout).
        labels: (Z, Y, X) label map.
        table: label value -> organ name for the legend.
        spacing: (sz, sy, sx) mm, for the coronal aspect ratio.
        path: output file (written atomically).

    Returns:
        The written path.
    """
    Z, Y, X = labels.shape
    fg = np.argwhere(labels > 0)
    cz, cy, _ = (fg.mean(axis=0).astype(int) if len(fg) else (Z // 2, Y // 2, X // 2))
    # radiological display: axial anterior up, coronal superior up, patient's right on the image's left
    axial = _overlay(display_slice(display, "axial", cz), display_slice(labels, "axial", cz), alpha)
    cor = _overlay(display_slice(display, "coronal", cy), display_slice(labels, "coronal", cy), alpha)
    h = 384
    ax_img = Image.fromarray(axial).resize((max(1, round(h * X * spacing[2] / (Y * spacing[1]))), h))
    cor_h = max(1, round(Z * spacing[0] / (X * spacing[2]) * ax_img.width))
    cor_img = Image.fromarray(cor).resize((ax_img.width, min(cor_h, 4 * h)))
    legend_w = 220
    canvas = Image.new("RGB", (ax_img.width + cor_img.width + legend_w, max(ax_img.height, cor_img.height)))
    canvas.paste(ax_img, (0, 0))
    canvas.paste(cor_img, (ax_img.width, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = ax_img.width + cor_img.width + 10
    for i, (v, name) in enumerate(sorted(table.items())):
        colour = label_color(v)
        draw.rectangle([x0, 10 + 18 * i, x0 + 12, 22 + 18 * i], fill=colour)
        draw.text((x0 + 18, 10 + 18 * i), f"{v} {name}", fill=(255, 255, 255))
    draw.text((4, 4), f"axial z={cz}", fill=(255, 255, 0))
    draw.text((ax_img.width + 4, 4), f"coronal y={cy}", fill=(255, 255, 0))
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    canvas.save(tmp, format="PNG")
    tmp.replace(out)
    return out
