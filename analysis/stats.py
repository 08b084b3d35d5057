"""The delay statistics every table and figure reports, computed in one place.

n, mean, std (ddof=1; 0 for one value), p50, p90, p99 (``numpy.percentile``, linear
interpolation), min and max of the finite values given (``None`` and NaN are skipped).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Stats:
    n: int
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[Any]) -> "Stats | None":
        """The statistics of the finite values; ``None`` if there are none."""
        a = np.asarray([v for v in values if v is not None], dtype=float)
        a = a[np.isfinite(a)]
        if a.size == 0:
            return None
        p50, p90, p99 = (float(p) for p in np.percentile(a, PERCENTILES))
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        return cls(int(a.size), float(a.mean()), std, p50, p90, p99, float(a.min()), float(a.max()))


STAT_COLUMNS = tuple(f.name for f in dataclasses.fields(Stats))


def stat_row(values: Iterable[Any]) -> dict[str, float]:
    """``Stats.of(values)`` as one table row: ``n`` 0 and NaN elsewhere when there are none."""
    stats = Stats.of(values)
    if stats is None:
        return dict(n=0, **{k: math.nan for k in STAT_COLUMNS[1:]})
    return dataclasses.asdict(stats)
