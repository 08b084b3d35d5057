"""Which cells (configuration x load) of a sweep are flagged, and why, in a few words each.

The console summary after ``testbed run`` marks these cells; the report's tables carry the same
flags (``analysis.tables``). A cell is flagged when, in any of its steps:

- ``cpu-saturated``: a host's 1-min load average exceeded its cores (processing times describe
  this machine's contention, not the device);
- ``load-missed``: the competing load achieved missed the one asked by more than the tolerance;
- ``few-frames``: fewer frames were measured than the scenario asked for, every MD of a cell
  counted (failed frames or a failed step; frames a camera-paced MD dropped by its busy policy
  are accounted for, not missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.load import Results
from analysis.tables import LOAD_TOLERANCE_PCT

REASONS = {
    "cpu-saturated": "a host's load average exceeded its cores during the step",
    "load-missed": f"the achieved competing load missed the asked one by more than {LOAD_TOLERANCE_PCT:g}%",
    "few-frames": "fewer measured frames than the scenario asked for",
    "ns3-late": "the ns-3 simulator ran behind the wall clock: lateness p99 above 1 ms in a step",
}


@dataclass(frozen=True)
class CellFlag:
    config: str
    load: str
    """The load label, as in ``analysis.load.load_label``."""
    flags: tuple[str, ...]
    detail: str
    """The flags with their evidence, e.g. ``cpu-saturated (md, es)``."""


def flag_cells(results: Results, frames_per_step: int) -> list[CellFlag]:
    """Flagged cells of one run, in step order; unflagged cells are omitted.

    ``frames_per_step``: the measured frames a step asks of each MD (the scenario's ``frames``).
    """
    measured_by_cell = results.frames.groupby(["config", "load"]).size()
    out = []
    for (config, load), g in results.steps.groupby(["config", "load"], sort=False):
        found: dict[str, str] = {}
        saturated = sorted({h for hosts in g["saturated_hosts"].fillna("") for h in hosts.split(",") if h})
        if saturated:
            found["cpu-saturated"] = f"cpu-saturated ({', '.join(saturated)})"
        missed = g[g["load_asked_mbit"].gt(0) & g["load_error_pct"].abs().gt(LOAD_TOLERANCE_PCT)]
        if len(missed):
            worst = missed.loc[missed["load_error_pct"].abs().idxmax()]
            achieved = worst["load_achieved_mbit"]
            got = "nothing measured" if math.isnan(achieved) else f"{achieved:.3g} Mbit/s"
            found["load-missed"] = f"load-missed ({got} of {worst['load_asked_mbit']:g})"
        measured = int(measured_by_cell.get((config, load), 0)) + int(g["dropped_frames"].sum())
        asked = frames_per_step * int(g["mds"].sum())
        if measured < asked:
            found["few-frames"] = f"few-frames ({measured} of {asked})"
        late = g[g["medium_flags"].fillna("").str.contains("ns3-late", regex=False)]
        if len(late):
            found["ns3-late"] = f"ns3-late (p99 up to {late['ns3_late_p99_ms'].max():.2f} ms)"
        if found:
            out.append(CellFlag(str(config), str(load), tuple(found), ", ".join(found.values())))
    return out
