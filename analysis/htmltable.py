"""A DataFrame as the report's HTML table (escaped cells, a scrolling wrapper, flagged rows)."""

from __future__ import annotations

import html
from typing import Sequence

import pandas as pd


def html_table(df: pd.DataFrame, index: bool = False, flagged: Sequence[bool] | None = None,
               numeric: Sequence[str] = ()) -> str:
    """``df`` as ``<table>``: columns in ``numeric`` right-aligned, rows where ``flagged`` is true
    marked with the ``flagged`` class; the index as a first column when ``index``."""
    d = df.reset_index() if index else df
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in d.columns)
    rows = []
    for i, row in enumerate(d.itertuples(index=False)):
        cls = ' class="flagged"' if flagged is not None and flagged[i] else ""
        cells = "".join(f'<td class="num">{html.escape(str(v))}</td>' if c in numeric
                        else f"<td>{html.escape(str(v))}</td>" for c, v in zip(d.columns, row))
        rows.append(f"<tr{cls}>{cells}</tr>")
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            "</tbody></table></div>")
