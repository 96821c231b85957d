"""Tables that never cut what a user copies: model names and version ids stay whole, on one line.

rich fits a table that is wider than the terminal by wrapping its columns and, as a last
resort, by cutting every column with an ellipsis: ``smollm2-135m-in…`` in an 80-column
terminal, the one thing a user must copy. Here the columns named ``whole`` keep their full
width and never wrap; the others fold. Where even that does not fit (``ortmodels ps`` has ten
columns), each row is printed as a block of ``column  value`` lines under its name instead.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.cells import cell_len
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from . import console

# The least a folded column gets per line, padding excluded, before rows become blocks.
_FOLDED_MIN = 8


Cell = str | Text
"""A value: plain text (never read as markup), or styled `Text`."""


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def print_rows(
    headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, whole: Collection[str], title: str | None = None
) -> None:
    """Print ``rows`` as a table if its ``whole`` columns fit uncut, else one block per row."""
    widths = [max([cell_len(header), *(_text(row[i]).cell_len for row in rows)]) for i, header in enumerate(headers)]
    needed = len(headers) + 1 + sum(  # borders, then each column with its padding of 2
        (width if header in whole else min(width, _FOLDED_MIN)) + 2 for header, width in zip(headers, widths)
    )
    if needed <= console.width:
        console.print(_table(headers, rows, whole, widths, title))
    else:
        _print_blocks(headers, rows, whole, title)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], whole: Collection[str],
           widths: Sequence[int], title: str | None) -> Table:
    table = Table(title=title)
    for header, width in zip(headers, widths):
        if header in whole:
            table.add_column(header, no_wrap=True, min_width=width)
        else:
            table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*map(_text, row))  # values are text: a "[" in one is not markup
    return table


def _print_blocks(headers: Sequence[str], rows: Sequence[Sequence[Cell]], whole: Collection[str],
                  title: str | None) -> None:
    """Each row under its first whole value (an unnamed column's value before it, like ``*``)."""
    key = next(i for i, header in enumerate(headers) if header in whole)
    if title:
        console.print(Text(title, style="bold"))
    for n, row in enumerate(rows):
        marks = [str(row[i]) for i, header in enumerate(headers) if not header and row[i]]
        if title or n:
            console.print()
        # soft_wrap: rich neither wraps nor crops the line; only a terminal narrower than the
        # name itself breaks it.
        console.print(Text(" ".join([*marks, str(row[key])]), style="bold"), soft_wrap=True)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        for i, header in enumerate(headers):
            if header and i != key:
                grid.add_row(header, _text(row[i]))
        console.print(Padding(grid, (0, 0, 0, 2), expand=False))
