"""What a person reads at the terminal: tables that fit it, text never read as markup, JSON for scripts.

On a terminal a table fits the window: cells wrap, and an identifier column (an alarm id, a device id, a
Bluetooth address) stays whole as long as it can fit at all, and is then folded, never cut.  Piped or
redirected (stdout not a terminal), nothing wraps and nothing is cut: every row is printed at its full width,
so what a script reads or a person copies is the whole identifier.  Dynamic text always goes into a `Text`,
so a value such as `[iU]` is shown as written instead of being taken for Rich markup.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported when something is drawn: `run` and --json never load it
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

PIPED_WIDTH = 10_000  # wide enough for any row: piped output is never wrapped or cut


def console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr): the terminal's width on a terminal, unbounded when piped."""
    from rich.console import Console  # noqa: PLC0415

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPED_WIDTH, no_color=True, highlight=False)


def table(*headers: str, ids: tuple[str, ...] = (), title: str | None = None) -> Table:
    """A compact table; the columns named in `ids` hold identifiers (kept whole; folded only if nothing else
    can give way), the others wrap."""
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    out = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0))
    for header in headers:
        out.add_column(header, no_wrap=header in ids, overflow="fold")
    return out


def row(*values: object) -> list[Text]:
    """Table cells from dynamic values, never interpreted as markup (None shows as '-')."""
    from rich.text import Text  # noqa: PLC0415

    return [Text("-" if value is None else str(value)) for value in values]


def print_json(value: Any) -> None:
    """One JSON document on stdout (objects, numbers and strings as themselves; never a Python repr)."""
    print(json.dumps(value, indent=2, allow_nan=False))  # noqa: T201 - the terminal front end's job
