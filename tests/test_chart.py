"""The terminal chart of validation loss and its one-line form: plain characters, no dependency."""

from __future__ import annotations

import math

from rnngen.chart import BRAILLE, chart_or_line, loss_chart, summary

FALLING = [(150 * i, 1.4 + 2.7 * math.exp(-150 * i / 300)) for i in range(1, 11)]  # steps 150..1500


def plot_rows(chart: str) -> list[str]:
    """The braille part of each plotted row (after the axis character)."""
    return [line.split("┤" if "┤" in line else "│", 1)[1] for line in chart.splitlines() if "┤" in line or "│" in line]


def dots_in(row: str) -> list[int]:
    """Columns of the cells that hold at least one dot."""
    return [i for i, ch in enumerate(row) if ord(ch) > BRAILLE]


def test_summary_line():
    assert summary(FALLING) == "validation loss: 3.04 -> 1.42 over 10 evaluations, best 1.42 at step 1500"
    assert summary([(10, 4.12), (20, 1.41), (30, 1.43)]) == \
        "validation loss: 4.12 -> 1.43 over 3 evaluations, best 1.41 at step 20"
    assert summary([(30, 2.5)]) == "validation loss: 2.50 after 1 evaluation, at step 30"
    assert summary([]) == "validation loss: no evaluations"


def test_chart_has_the_asked_size_and_only_plain_characters():
    chart = loss_chart(FALLING, width=40, height=6)
    rows = plot_rows(chart)
    assert len(rows) == 6 and all(len(r) <= 40 for r in rows) and max(len(r) for r in rows) == 40
    assert chart.splitlines()[-2].endswith("└" + "─" * 40)
    assert chart.splitlines()[-1].split() == ["150", "1500", "steps"]
    assert chart.splitlines()[0].startswith("3.04 ┤") and chart.splitlines()[5].startswith("1.42 ┤")
    assert all(ch.isascii() or 0x2500 <= ord(ch) <= 0x257F or BRAILLE <= ord(ch) <= 0x28FF for ch in chart)


def test_a_falling_loss_goes_from_top_left_to_bottom_right():
    rows = plot_rows(loss_chart(FALLING, width=60, height=8))
    assert dots_in(rows[0])[0] == 0 and max(dots_in(rows[0])) < 10
    assert max(dots_in(rows[-1])) == 59 and min(dots_in(rows[-1])) > 20
    assert all(dots_in(r) for r in rows)  # a connected line crosses every row


def test_a_rising_loss_is_drawn_the_other_way():
    rising = [(s, 5 - v) for s, v in FALLING]
    rows = plot_rows(loss_chart(rising, width=60, height=8))
    assert max(dots_in(rows[0])) == 59 and dots_in(rows[-1])[0] == 0


def test_flat_single_and_diverged_series():
    flat = loss_chart([(10, 2.0), (20, 2.0), (30, 2.0)], width=20, height=4)
    assert flat.count("2.00") == 1 and len([r for r in plot_rows(flat) if dots_in(r)]) == 1
    single = loss_chart([(10, 2.0)], width=20, height=3)
    assert sum(len(dots_in(r)) for r in plot_rows(single)) == 1 and single.splitlines()[-1].strip() == "step 10"
    with_nan = loss_chart(FALLING + [(1650, float("nan")), (1800, float("inf"))], width=60, height=8)
    assert with_nan == loss_chart(FALLING, width=60, height=8)
    assert loss_chart([(10, float("nan"))]) == "validation loss: no evaluations"


def test_off_a_terminal_one_line():
    line = chart_or_line(FALLING, is_terminal=False)
    assert line == summary(FALLING) and "\n" not in line
    on = chart_or_line(FALLING, is_terminal=True, width=30, height=5)
    assert on.splitlines()[0] == summary(FALLING) and len(on.splitlines()) == 1 + 5 + 2
    assert chart_or_line([(10, 3.0)], is_terminal=True) == summary([(10, 3.0)])  # one point: no chart
