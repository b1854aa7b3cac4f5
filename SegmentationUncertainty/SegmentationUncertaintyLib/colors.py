"""Segment colours: distinct, colour-blind-friendly RGB triples in [0, 1], shared by the MRML logic
(segments of samples, raters, consensuses) and the command-line tools' ``.seg.nrrd`` files."""

from __future__ import annotations

import colorsys

__all__ = ["SEGMENT_COLORS", "distinct_colors"]

#: Distinct, colour-blind-friendly segment colours (Okabe–Ito, then Tableau), RGB in [0, 1].
SEGMENT_COLORS = (
    (0.90, 0.62, 0.00), (0.34, 0.71, 0.91), (0.00, 0.62, 0.45), (0.94, 0.89, 0.26),
    (0.00, 0.45, 0.70), (0.84, 0.37, 0.00), (0.80, 0.47, 0.65), (0.55, 0.34, 0.29),
    (0.50, 0.50, 0.50), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81), (0.89, 0.47, 0.76),
)


def distinct_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` pairwise different RGB colours in [0, 1]: :data:`SEGMENT_COLORS` first, then hues spaced by
    the golden angle (so samples 13, 14, ... of a large set do not repeat the first colours)."""
    colors = list(SEGMENT_COLORS[:n])
    index = 0
    while len(colors) < n:
        hue = (0.11 + index * 0.618033988749895) % 1.0
        value = (0.95, 0.75, 0.55)[(index // 7) % 3]
        color = tuple(round(c, 4) for c in colorsys.hsv_to_rgb(hue, 0.65, value))
        if color not in colors:
            colors.append(color)
        index += 1
    return colors
