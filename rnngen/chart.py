"""Validation loss as a chart drawn with characters, for the end of a run in a terminal, and as one
plain line where the output is not a terminal (a log file, CI, a pipe).

The chart is Unicode braille: each character cell holds 2 x 4 dots, so a 60 x 8 chart is 120 x 32
dots, enough to see a curve bend. Plain text, no colour and no dependency, so it prints the same
through rich, a logger or `print`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BRAILLE = 0x2800
# The bit of each dot in a braille cell, by (column, row) inside the cell, rows counted from the top.
DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


def _finite(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """The points in step order, without losses that are NaN or infinite (a run that diverged)."""
    return sorted((int(s), float(v)) for s, v in points if math.isfinite(v))


def summary(points: Sequence[tuple[int, float]]) -> str:
    """One line: first -> last over N evaluations, and the best with its step."""
    points = _finite(points)
    if not points:
        return "validation loss: no evaluations"
    step, best = min(points, key=lambda p: (p[1], p[0]))
    if len(points) == 1:
        return f"validation loss: {best:.2f} after 1 evaluation, at step {step}"
    return (f"validation loss: {points[0][1]:.2f} -> {points[-1][1]:.2f} over {len(points)} evaluations, "
            f"best {best:.2f} at step {step}")


def loss_chart(points: Sequence[tuple[int, float]], width: int = 60, height: int = 8) -> str:
    """Validation loss (y, nats) over steps (x) as `height` rows of `width` braille cells, with the
    highest and lowest loss marked on the left and the first and last step below."""
    width, height = max(2, width), max(2, height)
    points = _finite(points)
    if not points:
        return summary(points)
    cols, rows = 2 * width, 4 * height  # dots
    first, last = points[0][0], points[-1][0]
    low, high = min(v for _, v in points), max(v for _, v in points)

    def dot(step: float, loss: float) -> tuple[int, int]:
        x = round((step - first) / (last - first) * (cols - 1)) if last > first else 0
        y = round((high - loss) / (high - low) * (rows - 1)) if high > low else rows // 2
        return x, y

    cells = [[0] * width for _ in range(height)]  # braille bits of each cell

    def mark(x: int, y: int) -> None:
        cells[y // 4][x // 2] |= DOT_BITS[x % 2][y % 4]

    xys = [dot(s, v) for s, v in points]
    mark(*xys[0])
    for (xa, ya), (xb, yb) in zip(xys, xys[1:]):  # a straight line of dots between evaluations
        n = max(abs(xb - xa), abs(yb - ya))
        for i in range(1, n + 1):
            mark(round(xa + (xb - xa) * i / n), round(ya + (yb - ya) * i / n))

    top, bottom = f"{high:.2f}", f"{low:.2f}"
    pad = max(len(top), len(bottom))
    labels = {0: top, height - 1: bottom} if high > low else {xys[0][1] // 4: top}  # flat: one label
    lines = []
    for r, row in enumerate(cells):
        label = labels.get(r, "")
        axis = "┤" if label else "│"
        lines.append(f"{label:>{pad}} {axis}" + "".join(chr(BRAILLE + bits) for bits in row).rstrip(chr(BRAILLE)))
    lines.append(" " * pad + " └" + "─" * width)
    left, right = (str(first), f"{last} steps") if last > first else (f"step {first}", "")
    gap = max(1, width + 1 - len(left) - len(right))
    lines.append((" " * (pad + 2) + left + " " * gap + right).rstrip())
    return "\n".join(lines)


def chart_or_line(points: Sequence[tuple[int, float]], is_terminal: bool, width: int = 60,
                  height: int = 8) -> str:
    """For a terminal, the summary line above the chart; elsewhere the summary line alone, which
    reads well in a log and greps as one record."""
    line = summary(points)
    if not is_terminal or len(_finite(points)) < 2:
        return line
    return line + "\n" + loss_chart(points, width, height)
