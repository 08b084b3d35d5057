"""The AP/eNB host's ``ns3`` section: how the ``ns3`` backend simulates the cell, and whether
ns-3 is installed here.

```yaml
hosts:
  - name: ap
    role: ap
    backend: ns3
    ns3:
      distance_m: {md: 5, ext: 10}  # per station, metres from the AP; unset stations: 5 m
      rate_control: constant        # constant (ErpOfdmRate54Mbps data) | minstrel
      seed: 1                       # ns-3's run number (backoff draws)
```

Channel loss follows from the distances: ns-3's log-distance model (exponent 3, 46.68 dB at
1 m, 16 dBm transmit power); with ``constant`` rate control frames start to fail beyond about
60 m. The section is allowed only with ``backend: ns3`` (an ``auto`` AP that picks ns-3, by
its measured fidelity, runs it with these defaults).

On an LTE link (the eNB host, ``testbed.lab.ns3_lte``) ``rate_control`` does not apply and
``scheduler`` picks LENA's eNB MAC scheduler: ``rr`` (round robin, the default) or ``pf``
(proportional fair); ``distance_m`` places the UEs around the eNB, ``seed`` is ns-3's run number.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.checks import BAD, Checker, Section, join

NS3_REQUIREMENT = "ns3==3.44.post0"
NS3_FIX = (f"run `bash scripts/install.sh` (it installs {NS3_REQUIREMENT} from pyproject.toml "
           f"into .venv), or `.venv/bin/pip install {NS3_REQUIREMENT}`")
RATE_CONTROLS = ("constant", "minstrel")
SCHEDULERS = ("rr", "pf")
DEFAULT_DISTANCE_M = 5.0
MAX_DISTANCE_M = 1000.0


@dataclass(frozen=True)
class Ns3Settings:
    distance_m: dict[str, float] = field(default_factory=dict)
    rate_control: str | None = "constant"
    """WiFi only (None on an LTE link)."""
    seed: int = 1
    scheduler: str | None = None
    """LTE only (None on a WiFi link): ``rr`` or ``pf``."""

    @classmethod
    def for_kind(cls, kind: str | None) -> "Ns3Settings":
        """The defaults of a link of ``kind``."""
        return cls(rate_control=None, scheduler="rr") if kind == "lte" else cls()

    def distance(self, station: str) -> float:
        return self.distance_m.get(station, DEFAULT_DISTANCE_M)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


KEYS = tuple(Ns3Settings.__dataclass_fields__)


def ns3_available() -> bool:
    """True if ns-3's Python bindings can be imported here (looked up, not imported: the
    import takes 9-13 s)."""
    return importlib.util.find_spec("ns") is not None


def missing_message() -> str:
    return f"ns-3 is not installed in this Python ({NS3_REQUIREMENT} is missing): {NS3_FIX}"


def parse_ns3(ck: Checker, raw: Any, path: str, kind: Any, backend: Any,
              available: bool | None = None) -> Ns3Settings | None:
    """The ``ns3`` section of the AP/eNB host at ``path`` (None when absent and the backend is
    not ns3). ``available``: whether ns-3 is installed (None: look it up). Problems go to
    ``ck`` with the file and key path."""
    if backend == "ns3":
        if not (ns3_available() if available is None else available):
            ck.error(join(path, "backend"), missing_message())
        if kind not in ("wifi", "lte", None, BAD):
            ck.error(join(path, "backend"), f"the ns3 backend simulates a WiFi (802.11g) or an "
                                            f"LTE (LENA) cell, not a {kind} link: use backend "
                                            f"vm, namespace or auto")
    if raw is None:
        return Ns3Settings.for_kind(kind) if backend == "ns3" else None
    if backend not in ("ns3", BAD):
        ck.error(join(path, "ns3"), f"the ns3 section configures the ns3 backend; this host's "
                                    f"backend is {backend!r}: set backend: ns3 or remove it")
        return None
    d = Ns3Settings()
    section = Section(ck, raw, join(path, "ns3"), KEYS, "ns-3 settings")
    distances: dict[str, float] = {}
    raw_d = section.data.get("distance_m")
    if raw_d is not None:
        at = section.at("distance_m")
        if not isinstance(raw_d, dict):
            ck.error(at, f"expected a mapping of station name to metres, got {raw_d!r}")
        else:
            for name, value in raw_d.items():
                v = ck.number(value, join(at, str(name)), above=0, maximum=MAX_DISTANCE_M)
                if v is not BAD:
                    distances[str(name)] = v
    lte = kind == "lte"
    if lte and section.data.get("rate_control") is not None:
        section.error("rate_control", "rate control belongs to the 802.11g cell; on an LTE link "
                                      "the eNB's scheduler (key scheduler) decides: remove it")
    if not lte and isinstance(kind, str) and section.data.get("scheduler") is not None:
        section.error("scheduler", f"the scheduler is LENA's eNB MAC scheduler of an LTE link; "
                                   f"this link is {kind}: remove it")
    return Ns3Settings(
        distance_m=distances,
        rate_control=None if lte else section.string("rate_control", d.rate_control,
                                                     choices=RATE_CONTROLS),
        seed=section.integer("seed", d.seed, minimum=1, maximum=2**31 - 1),
        scheduler=section.string("scheduler", "rr", choices=SCHEDULERS) if lte else None,
    )


def check_stations(ck: Checker, path: str, settings: Ns3Settings | None,
                   stations: list[str]) -> None:
    """Every ``distance_m`` key must name a station (md/ext host) of the scenario."""
    if settings is None:
        return
    for name in settings.distance_m:
        if name not in stations:
            ck.error(join(join(path, "ns3.distance_m"), name),
                     f"not a station of this scenario (stations: {', '.join(stations) or 'none'})")
