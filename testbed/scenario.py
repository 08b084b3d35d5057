"""Scenario files: the typed model of one run, and the loader that checks it.

A scenario (YAML, in ``scenarios/``) says which link, which hosts, which competing loads and which
configurations to compare. ``load_scenario`` reads a file with ``yaml.safe_load``, checks every
key and returns a frozen ``Scenario``; if anything is wrong it raises ``ScenarioError`` listing
*every* problem, one line each, as ``FILE: key.path: what was expected, what was found``.
A load above the link's capacity is only a warning (logged, and kept in ``Scenario.warnings``).

``scenario_to_dict`` gives the scenario as loaded (defaults filled in, presets expanded, split
points resolved to names) as JSON-serialisable data for a run's manifest; it parses back to an
equal ``Scenario``.

Emulated host names are 1-5 lowercase letters and digits (``md``, ``es``, ``ap``, ``enb``,
``ext``, ``ext2``): they become part of namespace and interface names (``testbed.lab.names``).
Emulated hosts may name a ``cpu`` share (a fraction of one core, at most the cores of the machine
that validates the scenario) and ``torch_threads`` (default: the cpu share rounded down, at least
1; without a cpu share, all the cores). Competing load (``sweep.loads_mbit``) is the total UDP
rate asked of iperf3, shared equally by the ``ext`` hosts; ``uplink`` sends it ext -> es,
``downlink`` es -> ext.

In a real lab (``lab: {hosts: [...]}``) the inventory replaces ``hosts``: ``testbed.lab_section``
checks it, with the lab's WiFi or LTE settings (``lab.radio``). Every check reports through one
``testbed.checks.Checker``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed import presets
from testbed.capture_settings import PacketCapture, parse_packet_capture
from testbed.cell_section import Cell, EsService, check_cell_hosts, md_hosts, parse_cell, parse_es
from testbed.ns3_settings import Ns3Settings, check_stations, parse_ns3
from testbed.checks import BAD, NAME, NAME_RE, Checker, Problem, describe, join, ok
from testbed.configs import Configuration
from testbed.devices import REAL, check_compute, check_coverage
from testbed.configuration_section import parse_configurations
from testbed.lab import names
from testbed.lab_section import Lab, LabHost, parse_lab
from testbed.link_section import parse_link
from testbed.machine import usable_cores
from testbed.models import catalog
from testbed.presets import LinkSpec
from testbed.roles import HOST_ROLES, check_roles

log = logging.getLogger(__name__)

LAB_SUBNET = ipaddress.ip_network("198.18.0.0/15")
"""RFC 2544 benchmarking range: every emulated host address lives here."""

BACKENDS = ("namespace", "vm", "ns3", "auto")
"""Where an emulated AP/eNB runs and shapes (``Host.backend``)."""
DIRECTIONS = ("uplink", "downlink")
LOAD_TOOLS = ("iperf3",)
"""Programs that make the competing load (``sweep.tool``)."""
DEFAULT_MODEL = "densenet201"
DEFAULT_N_CH = 12
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_FRAME_TIMEOUT_S = 60.0
DEFAULT_UDP_PAYLOAD = 1472
"""iperf3 -l: the largest UDP payload of an unfragmented 1500-byte IPv4 packet."""

HOST_NAME_RE = names.HOST_RE
HOST_NAME = (
    "a host name of 1-5 lowercase letters and digits, starting with a letter "
    "(it becomes part of namespace and interface names)"
)


# --------------------------------------------------------------------------- problems


class ScenarioError(ValueError):
    """A scenario that cannot run; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Host:
    """A host of the emulated lab (one network namespace)."""

    name: str
    role: str
    address: str | None = None
    """Inside ``LAB_SUBNET``; ``None``: the lab assigns one."""
    cpu: float | None = None
    """Share of one core (cgroup quota); ``None``: unlimited."""
    torch_threads: int = 1
    backend: str = "namespace"
    """AP/eNB only: ``namespace`` (the AP is a network namespace, host qdiscs), ``vm`` (the AP is
    a QEMU VM with real netem: ``testbed.vm``), ``ns3`` (an 802.11g or, on an LTE link, a LENA
    LTE cell simulated by ns-3: ``testbed.lab.ns3_lab``, ``testbed.lab.ns3_lte``) or ``auto``,
    the parser's default for an AP/eNB (the most faithful backend that can run here, by measured
    idle fidelity: ``testbed.lab.backends``). Other hosts are always ``namespace``."""
    hwsim: bool | None = None
    """AP of a WiFi link, when it runs as a VM: ``true`` (the default there) associates every
    station to hostapd over mac80211_hwsim radios in the VM (WPA2, ``testbed.vm.radio``);
    ``false`` shapes with netem only, without 802.11. Ignored (and recorded so) when the AP is a
    namespace."""
    compute: str = "real"
    """MD/ES only: ``real`` (processing takes what this machine takes) or a device profile whose
    processing times the host replays: a shipped name or a profile file's absolute path
    (``testbed.devices``; relative paths in a scenario file are resolved against its folder)."""
    ns3: Ns3Settings | None = None
    """AP with ``backend: ns3`` only: the simulated cell (``testbed.ns3_settings``)."""


@dataclass(frozen=True)
class Sweep:
    loads_mbit: tuple[float, ...] = (0.0,)
    """Total competing UDP load per step, asked of iperf3 (UDP payload bits per second)."""
    tool: str = "iperf3"
    direction: str = "uplink"
    """``uplink``: ext -> es (the MD's direction); ``downlink``: es -> ext."""
    settle_s: float = 1.0
    """Wait after starting the load before the first frame."""
    repetitions: int = 1
    packet_bytes: int = DEFAULT_UDP_PAYLOAD
    """UDP payload per datagram (iperf3 ``-l``)."""
    mds: tuple[int, ...] = ()
    """MDs streaming at once, one step each (``testbed.cell_section``); empty: every MD."""


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest message the tail accepts."""
    frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S
    """A step whose MD records no frame for this long (the first frame, which may build the
    head, gets 120 s more) is hung: it fails and its head agent is replaced."""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    lab: Lab
    link: LinkSpec
    hosts: tuple[Host, ...]
    """Emulated lab only (empty for a real lab: see ``lab.hosts``)."""
    sweep: Sweep
    configurations: tuple[Configuration, ...]
    frames: int
    """Measured frames per step (configuration x load x repetition)."""
    warmup: int
    """Extra, untimed frames sent before the measured ones."""
    capture_rate_hz: float | None
    """Fixed capture rate; ``None``: capture the next frame when the previous reply arrived."""
    images: str
    """A folder of images, or ``builtin``."""
    seed: int
    model: str
    n_ch: int
    limits: Limits = Limits()
    packet_capture: PacketCapture = PacketCapture()
    """Per-step tcpdump captures of packet headers (``testbed.capture_settings``)."""
    cell: Cell = Cell()
    """MDs per cell, their busy policy and deadline (``testbed.cell_section``)."""
    es: EsService = EsService()
    cpu_isolation: bool = True
    """Emulated lab: pin real processing to CPUs of its own as far as the machine allows (full,
    else the ES alone: ``testbed.lab.cpuset``); ``false`` pins nothing."""
    source: str = field(default="<string>", compare=False)
    warnings: tuple[Problem, ...] = field(default=(), compare=False)

    @property
    def emulated(self) -> bool:
        return self.lab.kind == "emulated"

    def members(self) -> tuple[Host | LabHost, ...]:
        """Every host of the run, emulated or real; a cell's md entry as its ``cell.mds`` MDs."""
        if not self.emulated:
            return self.lab.hosts
        return tuple(m for h in self.hosts
                     for m in (md_hosts(h, self.cell.mds) if h.role == "md" else (h,)))

    def by_role(self, role: str) -> tuple[Host | LabHost, ...]:
        return tuple(h for h in self.members() if h.role == role)

    def host(self, role: str) -> Host | LabHost:
        """The one host with ``role`` (md, es, ap or enb)."""
        (found,) = self.by_role(role)
        return found

    def configuration(self, name: str) -> Configuration:
        for c in self.configurations:
            if c.name == name:
                return c
        raise KeyError(name)


# --------------------------------------------------------------------------- sections

TOP_KEYS = (
    "name",
    "description",
    "lab",
    "link",
    "hosts",
    "sweep",
    "configurations",
    "frames",
    "warmup",
    "capture_rate_hz",
    "images",
    "seed",
    "model",
    "n_ch",
    "limits",
    "packet_capture",
    "cell",
    "es",
    "cpu_isolation",
)
HOST_KEYS = tuple(f.name for f in dataclasses.fields(Host))
SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(Sweep))
LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(Limits))


def _parse_sweep(ck: Checker, raw: Any, link: LinkSpec | None) -> Sweep | None:
    if raw is None:
        return Sweep()
    data = ck.mapping(raw, "sweep", SWEEP_KEYS)
    if data is None:
        return None
    d = Sweep()
    loads: Any = d.loads_mbit
    if "loads_mbit" in data:
        items = ck.sequence(data["loads_mbit"], "sweep.loads_mbit")
        if items is None:
            loads = BAD
        else:
            parsed = []
            seen: dict[float, int] = {}
            for i, v in enumerate(items):
                p = join("sweep.loads_mbit", i)
                x = ck.number(v, p, minimum=0)
                if x is not BAD and x in seen:
                    x = ck.error(p, f"duplicate load {x:g} (also sweep.loads_mbit[{seen[x]}])")
                elif x is not BAD:
                    seen[x] = i
                    if link is not None and x > link.capacity_mbit:
                        ck.warn(
                            p,
                            f"load {x:g} Mbit/s is above the link capacity "
                            f"({link.capacity_mbit:g} Mbit/s, {link.preset}): the medium saturates",
                        )
                parsed.append(x)
            loads = tuple(parsed) if ok(*parsed) else BAD
    tool = ck.get(data, "tool", "sweep", ck.string, d.tool, choices=LOAD_TOOLS)
    direction = ck.get(data, "direction", "sweep", ck.string, d.direction, choices=DIRECTIONS)
    settle = ck.get(data, "settle_s", "sweep", ck.number, d.settle_s, minimum=0)
    reps = ck.get(data, "repetitions", "sweep", ck.integer, d.repetitions, minimum=1)
    packet = ck.get(
        data, "packet_bytes", "sweep", ck.integer, d.packet_bytes, minimum=64, maximum=65507
    )
    if packet is not BAD and packet > DEFAULT_UDP_PAYLOAD:
        ck.warn(
            "sweep.packet_bytes",
            f"{packet} bytes of UDP payload do not fit a 1500-byte IPv4 packet: IP fragments",
        )
    mds: Any = ()
    if data.get("mds") is not None:
        items = ck.sequence(data["mds"], "sweep.mds", nonempty=False)
        counts = [ck.integer(v, join("sweep.mds", i), minimum=1) for i, v in enumerate(items or ())]
        mds = BAD if items is None or not ok(*counts) else tuple(counts)
        if mds is not BAD and len(set(mds)) != len(mds):
            mds = ck.error("sweep.mds", f"expected distinct numbers of MDs, got {list(counts)}")
    if not ok(loads, tool, direction, settle, reps, packet, mds):
        return None
    return Sweep(loads, tool, direction, settle, reps, packet, mds)


def _parse_hosts(
    ck: Checker, raw: Any, kind: str | None, loads: Any, cores: int, base: Path | None = None
) -> tuple[Host, ...] | None:
    if raw is None:
        station = "enb" if kind == "lte" else "ap"
        raw = [
            {"name": "md", "role": "md"},
            {"name": "es", "role": "es"},
            {"name": station, "role": station},
            {"name": "ext", "role": "ext"},
        ]
    items = ck.sequence(raw, "hosts")
    if items is None:
        return None
    out: list[Host | None] = []
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    roles: list[tuple[str, str | None]] = []
    for i, item in enumerate(items):
        path = join("hosts", i)
        data = ck.mapping(item, path, HOST_KEYS, required=("name", "role"))
        if data is None:
            out.append(None)
            continue
        n0 = len(ck.problems)
        name = ck.get(data, "name", path, ck.string, BAD, pattern=HOST_NAME_RE, what=HOST_NAME)
        if name is not BAD:
            if name in names:
                name = ck.error(
                    join(path, "name"), f"duplicate host name {name!r} (also hosts[{names[name]}])"
                )
            else:
                names[name] = i
        role = ck.get(data, "role", path, ck.string, BAD, choices=HOST_ROLES)
        roles.append((str(name), role if role is not BAD else None))
        address = None
        if data.get("address") is not None:
            address = _lab_address(ck, data["address"], join(path, "address"))
            if address is not BAD:
                if address in addresses:
                    address = ck.error(
                        join(path, "address"),
                        f"duplicate address {address} (also hosts[{addresses[address]}])",
                    )
                else:
                    addresses[address] = i
        cpu = ck.get(data, "cpu", path, ck.number, above=0)
        if cpu not in (None, BAD) and cpu > cores:
            cpu = ck.error(
                join(path, "cpu"),
                f"expected a share of at most the {cores} cores of this machine, got {cpu:g}",
            )
        threads = ck.get(data, "torch_threads", path, ck.integer, minimum=1)
        backend = ck.get(data, "backend", path, ck.string,
                         "auto" if role in ("ap", "enb") else "namespace", choices=BACKENDS)
        if backend not in ("namespace", BAD) and role not in ("ap", "enb", BAD):
            backend = ck.error(
                join(path, "backend"),
                f"only the ap/enb host has a backend (it decides where the shared medium is "
                f"shaped); {role!r} hosts are always namespaces, got {backend!r}",
            )
        hwsim = ck.get(data, "hwsim", path, ck.boolean)
        if hwsim is not None and hwsim is not BAD:
            if role not in ("ap", BAD):
                ck.error(join(path, "hwsim"), f"only the ap host of a WiFi link has radios; "
                                               f"{role!r} hosts do not, remove the key")
            elif kind not in ("wifi", None, BAD):
                ck.error(join(path, "hwsim"), f"hwsim radios belong to a WiFi link, this link is "
                                               f"{kind!r}: remove the key")
            elif hwsim and backend == "namespace":
                ck.error(join(path, "hwsim"), "hwsim radios run inside the AP VM: set backend: vm "
                                               "(or auto) on this host, or remove the key")
        ns3 = parse_ns3(ck, data.get("ns3"), path, kind, backend)
        compute = REAL
        if data.get("compute") not in (None, REAL):
            if role not in ("md", "es", BAD):
                compute = ck.error(join(path, "compute"), f"only the md and es hosts process "
                                                          f"frames; {role!r} hosts have no compute "
                                                          f"model, remove the key")
            else:
                compute = check_compute(ck, data["compute"], join(path, "compute"), base)
        if len(ck.problems) > n0:
            out.append(None)
            continue
        if threads is None:
            threads = max(1, math.floor(cpu)) if cpu is not None else cores
        elif cpu is not None and threads > math.ceil(cpu):
            ck.warn(
                join(path, "torch_threads"),
                f"{threads} threads on a {cpu:g}-core share oversubscribe it "
                "(expect slower frames)",
            )
        out.append(Host(name, role, address, cpu, threads, backend, hwsim, compute, ns3))
    for i, h in enumerate(out):
        if h is not None and h.ns3 is not None:
            check_stations(ck, join("hosts", i), h.ns3, [n for n, r in roles if r in ("md", "ext")])
    check_roles(ck, roles, "hosts", kind, loads, real=False)
    if any(h is None for h in out):
        return None
    return tuple(h for h in out if h is not None)


def _lab_address(ck: Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return ck.error(path, f"expected an IPv4 address in {LAB_SUBNET}, got {describe(value)}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return ck.error(path, f"expected an IPv4 address in {LAB_SUBNET}, got {value!r}")
    if address not in LAB_SUBNET:
        return ck.error(
            path, f"expected an address inside the lab subnet {LAB_SUBNET}, got {value}"
        )
    if address in (LAB_SUBNET.network_address, LAB_SUBNET.broadcast_address):
        return ck.error(path, f"expected a host address, got the subnet's own address {value}")
    return str(address)


def _parse_limits(ck: Checker, raw: Any) -> Limits | None:
    if raw is None:
        return Limits()
    data = ck.mapping(raw, "limits", LIMIT_KEYS)
    if data is None:
        return None
    d = Limits()
    size = ck.get(data, "max_message_bytes", "limits", ck.integer, d.max_message_bytes, minimum=1)
    timeout = ck.get(data, "frame_timeout_s", "limits", ck.number, d.frame_timeout_s, above=0)
    return None if BAD in (size, timeout) else Limits(size, float(timeout))


# --------------------------------------------------------------------------- public API


def parse_scenario(data: Any, source: str = "<string>", *, cores: int | None = None) -> Scenario:
    """Check parsed YAML (or ``scenario_to_dict`` output) and build the ``Scenario``.

    ``cores``: the cores an emulated host's ``cpu`` share may use (default: this machine's).
    Raises ``ScenarioError`` with every problem found.
    """
    ck = Checker(source)
    cores = cores or usable_cores()
    top = ck.mapping(data, "", TOP_KEYS, required=("name", "link", "configurations"))
    if top is None:
        raise ScenarioError(ck.problems)

    name = ck.get(top, "name", "", ck.string, BAD, pattern=NAME_RE, what=NAME)
    description = top.get("description")
    if description is None or description == "":
        description = ""
    else:
        description = ck.string(description, "description")
    model = ck.get(top, "model", "", ck.string, DEFAULT_MODEL, choices=tuple(catalog.MODELS))
    n_ch = ck.get(top, "n_ch", "", ck.integer, DEFAULT_N_CH, minimum=1)

    link = parse_link(ck, top["link"]) if "link" in top else None
    kind = link.kind if link is not None else None
    raw_link = top.get("link")
    if kind is None and isinstance(raw_link, dict) and raw_link.get("kind") in presets.LINK_KINDS:
        kind = raw_link["kind"]  # check roles even when other link keys are wrong
    sweep = _parse_sweep(ck, top.get("sweep"), link)
    loads = sweep.loads_mbit if sweep is not None else BAD

    lab = parse_lab(ck, top.get("lab"), kind, loads)
    hosts: tuple[Host, ...] | None = ()
    if lab is not None and lab.kind == "real":
        if top.get("hosts") is not None:
            ck.error("hosts", "a real lab's hosts come from lab.hosts: remove this section")
    elif lab is not None:
        base = None if source.startswith("<") else Path(source).parent
        hosts = _parse_hosts(ck, top.get("hosts"), kind, loads, cores, base)

    configurations = None
    if top.get("configurations") is not None:
        configurations = parse_configurations(ck, top["configurations"], model, n_ch)
    for i, host in enumerate(hosts or ()):
        if host.compute != REAL and configurations:
            check_coverage(ck, join(join("hosts", i), "compute"), host.compute, host.role,
                           configurations)

    frames = ck.get(top, "frames", "", ck.integer, 100, minimum=1)
    default_warmup = min(5, frames - 1) if frames is not BAD else 0
    warmup = ck.get(top, "warmup", "", ck.integer, default_warmup, minimum=0)
    if ok(frames, warmup) and warmup >= frames:
        warmup = ck.error(
            "warmup",
            f"expected fewer warm-up frames than frames ({frames}), got {warmup}",
        )
    rate = ck.get(top, "capture_rate_hz", "", ck.number, above=0)
    images = ck.get(top, "images", "", ck.string, "builtin")
    seed = ck.get(top, "seed", "", ck.integer, 0, minimum=0)
    limits = _parse_limits(ck, top.get("limits"))
    packet_capture = parse_packet_capture(ck, top.get("packet_capture"))
    if packet_capture.alternate and not packet_capture.enabled:
        ck.error("packet_capture.alternate", "alternates captured and uncaptured repetitions: "
                                             "set enabled: true as well, or remove it")
    elif packet_capture.alternate and sweep is not None and sweep.repetitions < 2:
        ck.error("packet_capture.alternate", f"captures even repetitions only: needs "
                                             f"sweep.repetitions of 2 or more, got "
                                             f"{sweep.repetitions}")
    cell = parse_cell(ck, top.get("cell"), sweep.mds if sweep is not None else ())
    es = parse_es(ck, top.get("es"))
    isolation = ck.get(top, "cpu_isolation", "", ck.boolean, True)
    if lab is not None and lab.kind == "real" and top.get("cpu_isolation") is not None:
        ck.error("cpu_isolation", "only the emulated lab pins its hosts to CPUs (a real lab's "
                                  "hosts are machines of their own): remove the key")
    if lab is not None and lab.kind == "real" and cell.mds > 1:
        ck.error("cell.mds", "a real lab's MDs are its lab.hosts: several MDs per cell run in "
                             "the emulated lab")
    md_template = [h for h in hosts or () if h.role == "md"]
    if md_template:
        check_cell_hosts(ck, cell, md_template[0].name,
                         sum(1 for h in hosts or () if h.role == "ext"))

    if ck.problems:
        raise ScenarioError(ck.problems)
    for warning in ck.warnings:
        log.warning("%s", warning)
    sections = {"link": link, "sweep": sweep, "lab": lab, "hosts": hosts,
                "configurations": configurations, "limits": limits}
    unread = [key for key, value in sections.items() if value is None]
    if unread:  # a section failed without saying why: a bug here, reported rather than hidden
        raise ScenarioError([Problem(source, key, "could not be read") for key in unread])
    assert link is not None and sweep is not None and lab is not None and hosts is not None
    assert configurations is not None and limits is not None  # for the type checker
    return Scenario(
        name=name,
        description=description,
        lab=lab,
        link=link,
        hosts=hosts,
        sweep=sweep,
        configurations=configurations,
        frames=frames,
        warmup=warmup,
        capture_rate_hz=rate,
        images=images,
        seed=seed,
        model=model,
        n_ch=n_ch,
        limits=limits,
        packet_capture=packet_capture,
        cell=cell,
        es=es,
        cpu_isolation=isolation,
        source=source,
        warnings=tuple(ck.warnings),
    )


def load_scenario(path: str | Path, *, cores: int | None = None) -> Scenario:
    """Read, check and build the scenario in ``path``; ``ScenarioError`` lists every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([Problem(source, "", f"cannot read the scenario: {exc}")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError([_yaml_problem(source, exc)]) from exc
    duplicates = _duplicate_keys(source, text)
    try:
        scenario = parse_scenario(data, source, cores=cores)
    except ScenarioError as exc:
        raise ScenarioError(duplicates + exc.problems) from None
    if duplicates:
        raise ScenarioError(duplicates)
    return scenario


def scenario_to_dict(s: Scenario) -> dict[str, Any]:
    """The scenario as loaded: JSON-serialisable, every default explicit; parses back equal."""
    out: dict[str, Any] = {"name": s.name, "description": s.description}
    if s.lab.kind == "emulated":
        out["lab"] = "emulated"
    else:
        out["lab"] = {"hosts": [dataclasses.asdict(h) for h in s.lab.hosts]}
        if s.lab.radio is not None:
            out["lab"]["radio"] = s.lab.radio.to_dict()
    out["link"] = s.link.to_dict()
    if s.lab.kind == "emulated":
        out["hosts"] = [dataclasses.asdict(h) for h in s.hosts]
    sweep = dataclasses.asdict(s.sweep)
    sweep["loads_mbit"] = list(s.sweep.loads_mbit)
    sweep["mds"] = list(s.sweep.mds)
    out["sweep"] = sweep
    out["configurations"] = [c.to_dict() for c in s.configurations]
    out.update(
        frames=s.frames,
        warmup=s.warmup,
        capture_rate_hz=s.capture_rate_hz,
        images=s.images,
        seed=s.seed,
        model=s.model,
        n_ch=s.n_ch,
        limits=dataclasses.asdict(s.limits),
        packet_capture=s.packet_capture.to_dict(),
        cell=s.cell.to_dict(),
        es=s.es.to_dict(),
    )
    if s.lab.kind == "emulated":
        out["cpu_isolation"] = s.cpu_isolation
    return out


# --------------------------------------------------------------------------- YAML details


def _yaml_problem(source: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    what = " ".join(
        str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x
    ) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return Problem(source, where, f"YAML syntax error: {what}")


def _duplicate_keys(source: str, text: str) -> list[Problem]:
    """Keys given twice in one mapping (``safe_load`` silently keeps the last one)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    problems: list[Problem] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    problems.append(
                        Problem(
                            source,
                            join(path, key),
                            f"key given twice (lines {seen[key]} and "
                            f"{key_node.start_mark.line + 1}); YAML would keep only the last",
                        )
                    )
                elif key is not None:
                    seen[key] = key_node.start_mark.line + 1
                walk(value_node, join(path, key) if key is not None else path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, join(path, i))

    walk(root, "")
    return problems
