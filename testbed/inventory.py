"""Real-lab inventories: checking them, reaching their hosts, and running things on them.

A real lab's scenario lists its hosts under ``lab.hosts`` (``testbed.scenario.LabHost``). This
module holds what every real-lab module shares:

* the checks of the inventory's radio and tool settings that ``testbed.scenario`` calls while it
  loads a scenario (:func:`parse_radio`, :func:`parse_host_radio`, :func:`parse_tools`), so a
  bad value is a scenario problem (``FILE: lab.radio.channel: expected ..., got ...``) found
  before anything runs;
* :func:`check_local`: what can be checked on the controller before connecting (key files,
  known_hosts entries, interfaces a link needs, hosts sharing a machine), as
  :class:`InventoryError` listing every problem with the file, the key path and what was expected;
* :func:`access_for` (``LabHost`` -> ``HostAccess``), :class:`Node` (one connected inventory host:
  sudo prefix, tool paths, files, addresses) and :class:`Daemon` (a privileged background
  program such as hostapd or srsenb, started and stopped over SSH, whose output is watched for
  the line that says it is ready, with the log lines that explain a failure).

Privileged commands are prefixed with ``sudo -n`` only on hosts with ``sudo: true``; a host whose
SSH user is root needs no sudo. The testbed's own programs (head, tail, iperf3) never run under
sudo: ``HostAccess.sudo`` is always false here.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
import shlex
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from testbed.hosts.remote import Completed, Host, HostAccess, RemoteProcess

if TYPE_CHECKING:
    from testbed.scenario import LabHost, Scenario

log = logging.getLogger(__name__)

TOOLS = ("hostapd", "wpa_supplicant", "iw", "ip", "iperf3", "srsepc", "srsenb", "srsue", "ss",
         "sysctl")
"""Programs a host may name a path for (``lab.hosts[i].tools``)."""

DATA_INTERFACES = ("lab", "data")
"""Logical interface names of a host's wired lab interface (the first one present is used)."""

Problems = list[tuple[str, str, str]]
"""``(sub-path, message, severity)``: what the checks return to ``testbed.scenario``."""


SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def with_sbin(argv: list[str]) -> list[str]:
    """``argv`` run by a shell that adds the sbin folders to PATH (hostapd, iw live there)."""
    return ["sh", "-c", f'PATH="$PATH:{SBIN}"; exec "$@"', "sh", *argv]


class InventoryError(ValueError):
    """The inventory cannot be used on this controller; one line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class LabError(RuntimeError):
    """A real lab could not be brought up or used (the message explains what and why)."""


# --------------------------------------------------------------------------- settings checks


def _describe(value: Any) -> str:
    from testbed.scenario import _describe as describe

    return describe(value)


class Fields:
    """Checks one mapping of settings and collects ``(sub-path, message, severity)``."""

    def __init__(self, raw: Any, allowed: Sequence[str], what: str):
        self.problems: Problems = []
        self.data: dict[str, Any] = {}
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.error("", f"expected a mapping of {what}, got {_describe(raw)}")
            return
        for key, value in raw.items():
            if not isinstance(key, str) or key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; expected one of {', '.join(allowed)}"
                self.error(str(key), f"unknown key {key!r}{hint}")
            else:
                self.data[key] = value

    @property
    def ok(self) -> bool:
        return not any(sev == "error" for _, _, sev in self.problems)

    def error(self, key: str, message: str) -> None:
        self.problems.append((key, message, "error"))

    def warn(self, key: str, message: str) -> None:
        self.problems.append((key, message, "warning"))

    def string(self, key: str, default: Any, *, pattern: re.Pattern[str] | None = None,
               what: str = "", choices: Sequence[str] | None = None) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            hint = ""
            if isinstance(value, int) and not isinstance(value, bool) and pattern is not None:
                hint = " (YAML reads unquoted digits as a number: quote it, e.g. '001')"
            self.error(key, f"expected {what or 'a non-empty string'}, got {_describe(value)}{hint}")
            return default
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error(key, f"expected one of {', '.join(choices)}, got {value!r}{hint}")
            return default
        if pattern is not None and not pattern.match(value):
            self.error(key, f"expected {what or pattern.pattern}, got {value!r}")
            return default
        return value

    def integer(self, key: str, default: Any, *, minimum: int | None = None,
                maximum: int | None = None, choices: Sequence[int] | None = None) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {_describe(value)}")
            return default
        if choices is not None and value not in choices:
            self.error(key, f"expected one of {', '.join(map(str, choices))}, got {value}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(key, f"expected an integer from {minimum} to {maximum}, got {value}")
            return default
        return value

    def number(self, key: str, default: Any, *, minimum: float | None = None,
               maximum: float | None = None) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(key, f"expected a number, got {_describe(value)}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(key, f"expected a number from {minimum:g} to {maximum:g}, got {value:g}")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {_describe(value)}")
            return default
        return value


def parse_radio(raw: Any, kind: str) -> tuple[Any, Problems]:
    """``lab.radio`` of a real lab with a ``kind`` link: settings with defaults, and problems."""
    if kind == "wifi":
        from testbed import wifi

        return wifi.parse_settings(raw)
    if kind == "lte":
        from testbed import lte

        return lte.parse_settings(raw)
    if raw is not None:
        return None, [("", f"a {kind} link has no radio settings: remove lab.radio", "error")]
    return None, []


def parse_host_radio(raw: Any, kind: str | None) -> tuple[dict[str, Any] | None, Problems]:
    """A lab host's ``radio`` mapping (LTE: its SDR's device name, arguments and gains)."""
    if raw == {}:
        return {}, []
    if kind not in ("lte", None):
        return None, [("", f"only hosts of a real LTE lab have radio settings (this is a {kind} "
                           "link): remove it", "error")]
    from testbed import lte

    return lte.parse_host_radio(raw)


TOOL_PATH_RE = re.compile(r"^[^\s'\"]+$")


def parse_tools(raw: Any, kind: str | None) -> tuple[dict[str, str] | None, Problems]:
    """A lab host's ``tools`` mapping: program -> path on that host."""
    f = Fields(raw, TOOLS, "program: path on the host")
    out = {}
    for key in f.data:
        value = f.string(key, None, pattern=TOOL_PATH_RE, what="a path without spaces or quotes")
        if value is not None:
            out[key] = value
    return (out if f.ok else None), f.problems


# --------------------------------------------------------------------------- machines and roles


def machine_of(h: LabHost) -> tuple[str, int]:
    """Hosts with the same SSH address and port are one machine (e.g. the ES and the AP)."""
    return (h.address, h.port)


def same_machine(a: LabHost, b: LabHost) -> bool:
    return machine_of(a) == machine_of(b)


def data_interface(h: LabHost) -> str | None:
    """The host's wired lab interface (``interfaces.lab`` or ``interfaces.data``), if named."""
    for key in DATA_INTERFACES:
        if key in h.interfaces:
            return h.interfaces[key]
    return None


def needs_root(h: LabHost, scenario: Scenario) -> list[str]:
    """What this host runs that needs root (empty: nothing)."""
    kind = scenario.link.kind
    why = []
    if kind == "wifi":
        if h.role == "ap":
            why.append("hostapd and the AP's address")
        elif is_station(h, scenario):
            why.append("wpa_supplicant and the station's address")
    elif kind == "lte":
        if h.role == "enb":
            why.append("srsepc (SGi tun) and srsenb (real-time priority)")
        elif h.role in ("md", "ext", "ue"):
            why.append("srsue (its tun interface) and the route to the ES")
    return why


def on_ap_machine(h: LabHost, scenario: Scenario) -> bool:
    """True if ``h`` shares the AP's machine (it then uses the AP's interface, no station)."""
    aps = scenario.by_role("ap")
    return bool(aps) and h.role != "ap" and same_machine(h, aps[0])


def is_station(h: LabHost, scenario: Scenario) -> bool:
    """A WiFi station: md/ext, or an ES with its own wlan interface off the AP's machine."""
    return (scenario.link.kind == "wifi" and h.role in ("md", "es", "ext")
            and "wlan" in h.interfaces and not on_ap_machine(h, scenario))


def tools_needed(h: LabHost, scenario: Scenario) -> list[str]:
    """The programs a host needs for its role on this scenario's link."""
    kind = scenario.link.kind
    need: list[str] = ["ip"]
    if kind == "wifi":
        if h.role == "ap":
            need += ["hostapd", "iw"]
        elif is_station(h, scenario):
            need += ["wpa_supplicant", "iw"]
    elif kind == "lte":
        if h.role == "enb":
            need += ["srsepc", "srsenb"]
        elif h.role in ("md", "ext", "ue"):
            need += ["srsue"]
    if h.role in ("es", "ext"):
        need += ["iperf3"]
    if h.role == "md":
        need += ["iperf3"]  # the link probe's client
    if h.role == "es":
        need += ["ss"]  # the orchestrator waits for listening sockets with it
    return list(dict.fromkeys(need))


def interfaces_needed(h: LabHost, scenario: Scenario) -> list[str]:
    """Logical interface names this host must declare for its role on this link."""
    kind = scenario.link.kind
    if kind == "wifi":
        if h.role == "ap":
            return ["wlan"]
        if h.role in ("md", "ext"):
            return ["wlan"]
        return []  # the ES: on the AP's machine, a station (wlan) or wired behind the AP
    if kind == "lte":
        return []  # tun names default to srsRAN's own (tun_srsue, srs_spgw_sgi)
    if h.role in ("md", "es", "ext"):
        return []  # wired: interfaces.lab if the lab network is not the SSH network
    return []


# --------------------------------------------------------------------------- local checks


def expand(path: str | None) -> Path | None:
    return None if path is None else Path(os.path.expanduser(path))


def check_local(scenario: Scenario) -> list[str]:
    """Problems of the inventory that the controller can see without connecting."""
    from testbed.hosts.keys import known_hosts_name

    import paramiko

    problems: list[str] = []
    source = scenario.source
    if scenario.emulated:
        return [f"{source}: lab: expected a real lab (lab.hosts), this scenario is emulated"]

    def bad(i: int, key: str, message: str) -> None:
        path = f"lab.hosts[{i}]" + (f".{key}" if key else "")
        problems.append(f"{source}: {path}: {message}")

    for i, h in enumerate(scenario.lab.hosts):
        key = expand(h.key_file)
        if key is None:
            bad(i, "key_file", "expected the path of a private key: the testbed uses no SSH agent "
                "and no default keys (e.g. key_file: ~/.ssh/hnd_testbed_ed25519)")
        elif not key.is_file():
            bad(i, "key_file", f"expected an existing private key file, {key} does not exist "
                "(make one with ssh-keygen -t ed25519 and install its .pub on the host)")
        else:
            try:
                paramiko.PKey.from_path(key)
            except Exception as exc:
                bad(i, "key_file", f"expected an unencrypted OpenSSH private key, {key}: {exc}")
            mode = stat.S_IMODE(key.stat().st_mode)
            if mode & 0o077:
                bad(i, "key_file", f"expected a private key readable only by its owner, {key} has "
                    f"mode {mode:04o} (chmod 600 {key})")
        if h.known_hosts is not None:
            kh = expand(h.known_hosts)
            assert kh is not None
            name = known_hosts_name(h.address, h.port)
            if not kh.is_file():
                if h.host_key is None:
                    bad(i, "known_hosts", f"expected an existing known_hosts file, {kh} does not "
                        f"exist (ssh-keyscan -p {h.port} {h.address} >> {kh}, then check the "
                        "fingerprint on the host's console)")
            elif not paramiko.HostKeys(str(kh)).lookup(name) and h.host_key is None:
                bad(i, "known_hosts", f"expected a line for {name!r} in {kh}, found none (address "
                    "and port must match exactly; hashed entries are fine)")
        for logical in interfaces_needed(h, scenario):
            if logical not in h.interfaces:
                bad(i, "interfaces", f"expected interfaces.{logical} (the {logical} interface a "
                    f"{h.role} host uses on a {scenario.link.kind} link), got "
                    f"{sorted(h.interfaces) or 'none'}")
    # hosts on one machine must agree on how they are reached
    seen: dict[tuple[str, int], int] = {}
    for i, h in enumerate(scenario.lab.hosts):
        first = seen.setdefault(machine_of(h), i)
        if first != i:
            other = scenario.lab.hosts[first]
            if (other.user, other.key_file) != (h.user, h.key_file):
                bad(i, "", f"shares {h.address}:{h.port} with lab.hosts[{first}] but names another "
                    "user or key: hosts on one machine must be reached the same way")
    kind = scenario.link.kind
    if kind == "wifi":
        ap = scenario.host("ap")
        for i, h in enumerate(scenario.lab.hosts):
            if h.role in ("md", "ext") and same_machine(h, ap):
                bad(i, "address", f"a {h.role} must be a station of its own, not the AP's machine")
    if kind == "lte":
        enb = scenario.host("enb")
        for i, h in enumerate(scenario.lab.hosts):
            if h.role in ("md", "ext", "ue") and same_machine(h, enb) and \
                    scenario.lab.radio.device_name != "zmq":
                bad(i, "address", f"a {h.role} runs srsue with its own radio: it cannot be the "
                    "eNB's machine (only with the ZeroMQ virtual radio)")
    return problems


def require_local(scenario: Scenario) -> None:
    problems = check_local(scenario)
    if problems:
        raise InventoryError(problems)


def access_for(h: LabHost, *, name: str | None = None) -> HostAccess:
    """How to reach an inventory host (``~`` expanded; HostAccess never uses sudo)."""
    key = expand(h.key_file)
    if key is None:
        raise InventoryError([f"lab host {h.name}: key_file is required (no agent, no default keys)"])
    return HostAccess(
        name=name or h.name, address=h.address, port=h.port, user=h.user, key_file=key,
        known_hosts=expand(h.known_hosts), host_key=h.host_key, python=h.python, sudo=False,
    )


# --------------------------------------------------------------------------- connected hosts


class Node:
    """One inventory host over one SSH connection, with what real-lab code needs of it."""

    def __init__(self, spec: LabHost, host: Host):
        self.spec = spec
        self.host = host
        self._root: bool | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    def __repr__(self) -> str:
        return f"Node({self.name}, {self.role}, {self.spec.user}@{self.spec.address})"

    def tool(self, name: str) -> str:
        return self.spec.tools.get(name, name)

    @property
    def is_root(self) -> bool:
        if self._root is None:
            self._root = self.host.run(["id", "-u"], timeout=10).stdout.strip() == "0"
        return self._root

    def privileged(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as root: ``sudo -n`` on sudo hosts, as is otherwise."""
        prefix = ["sudo", "-n"] if self.spec.sudo and not self.is_root else []
        return prefix + [str(a) for a in argv]

    def run(self, argv: Sequence[str], timeout: float = 30, *, check: bool = True,
            privileged: bool = False) -> Completed:
        """Run ``argv`` (with the sbin folders on PATH, which Debian leaves out for users)."""
        argv = with_sbin([str(a) for a in argv])
        return self.host.run(self.privileged(argv) if privileged else argv, timeout=timeout,
                             check=check)

    def put_text(self, text: str, remote: str, mode: int = 0o600) -> None:
        """Write ``text`` to ``remote`` on the host (SFTP), readable by the SSH user only."""
        with tempfile.TemporaryDirectory(prefix="testbed-") as tmp:
            local = Path(tmp) / "file"
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            self.host.put(local, remote, mode=mode)

    def read(self, remote: str, timeout: float = 15) -> str:
        return self.host.run(["cat", remote], timeout=timeout, check=False).stdout

    def ipv4(self, ifname: str) -> list[str]:
        """The interface's IPv4 addresses with prefix (``['198.18.1.2/24']``)."""
        res = self.run([self.tool("ip"), "-j", "-4", "addr", "show", "dev", ifname], timeout=10,
                       check=False)
        if res.rc != 0:
            raise LabError(f"{self.name}: interface {ifname} not found: {res.stderr.strip()}")
        out = []
        for link in json.loads(res.stdout or "[]"):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet":
                    out.append(f"{a['local']}/{a['prefixlen']}")
        return out

    def start_daemon(self, argv: Sequence[str], name: str, workdir: str, *,
                     privileged: bool = True) -> "Daemon":
        """Start a long-running program (hostapd, srsenb...) in the background."""
        pidfile = f"{workdir}/{name}.root.pid"
        inner = ["sh", "-c", f'echo $$ > "$0"; PATH="$PATH:{SBIN}"; exec "$@"', pidfile,
                 *[str(a) for a in argv]]
        proc = self.host.start(self.privileged(inner) if privileged else inner, name, workdir)
        return Daemon(self, name, proc, pidfile, privileged)


FAILURE_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"nl80211: .*(not found|not supported)|Failed to initialize driver", re.I),
     "the interface's driver does not support nl80211/AP mode (check iw list: 'Supported "
     "interface modes' must list AP)"),
    (re.compile(r"Could not configure driver mode|could not get valid channel|Device or resource busy", re.I),
     "another program manages the interface (NetworkManager, a system wpa_supplicant): "
     "nmcli device set IF managed no, or stop it"),
    (re.compile(r"ctrl_iface exists and seems to be in use", re.I),
     "another wpa_supplicant/hostapd already controls this interface"),
    (re.compile(r"rfkill|RF-kill", re.I), "the radio is blocked: rfkill unblock wlan"),
    (re.compile(r"CTRL-EVENT-SSID-TEMP-DISABLED.*WRONG_KEY", re.I),
     "wrong passphrase: the station and the AP must use this run's configuration"),
    (re.compile(r"CTRL-EVENT-NETWORK-NOT-FOUND", re.I),
     "no AP with the SSID was seen: check channel, country code and distance"),
    (re.compile(r"DFS|CAC", re.I), "a DFS channel: the AP must listen for radar first (>= 60 s)"),
    (re.compile(r"sudo: .*password", re.I), "sudo asks for a password: add a NOPASSWD rule"),
    (re.compile(r"not found|No such file", re.I), "a program or file is missing on the host"),
    (re.compile(r"Error opening RF device|Unable to open RF device|No UHD Devices", re.I),
     "the SDR is not found: check USB (uhd_find_devices) and device_name/device_args"),
    (re.compile(r"Address already in use|Error binding", re.I),
     "a port is taken: another srsepc/srsenb still runs on the host"),
    (re.compile(r"User not found|Authentication Failure|authentication failure", re.I),
     "the UE's IMSI/keys do not match the HSS database of this run"),
    (re.compile(r"Could not find a cell|Cell not found|No cell found|Could not find any cell", re.I),
     "the UE sees no cell: check earfcn, gains, antennas/cables and that srsenb runs"),
)


def explain(text: str, last: int = 15) -> str:
    """The log lines that explain a failure: known patterns with a hint, then the last lines."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    hints = []
    for line in lines:
        for pattern, hint in FAILURE_HINTS:
            if pattern.search(line):
                entry = f"  {line.strip()[:200]}\n    -> {hint}"
                if entry not in hints:
                    hints.append(entry)
                break
    tail = "\n".join(f"  | {ln[:200]}" for ln in lines[-last:]) or "  (no output)"
    out = ""
    if hints:
        out += "lines that explain it:\n" + "\n".join(hints[:8]) + "\n"
    return out + f"last lines of its output:\n{tail}"


@dataclass
class Daemon:
    """A background program on a lab host, possibly root (then stopped through sudo)."""

    node: Node
    name: str
    proc: RemoteProcess
    pidfile: str
    privileged: bool
    stopped: bool = field(default=False)

    def output(self) -> str:
        return self.poll()[0]

    def poll(self) -> tuple[str, int | None]:
        """(stdout + stderr so far, exit status or None while it runs) in one SSH command."""
        script = ('cat "$1" "$2" 2>/dev/null; '
                  'if [ -s "$3" ]; then printf "\\n@@testbed-rc %s\\n" "$(cat "$3")"; fi')
        res = self.node.host.run(["sh", "-c", script, "sh", self.proc.stdout_path,
                                  self.proc.stderr_path, self.proc.rc_path], timeout=15,
                                 check=False)
        text, sep, rc = res.stdout.rpartition("\n@@testbed-rc ")
        if sep:
            try:
                return text, int(rc.strip())
            except ValueError:
                pass
        return res.stdout, None

    def wait_for(self, pattern: re.Pattern[str], timeout: float, what: str,
                 *, poll: float = 0.25) -> re.Match[str]:
        """Wait until ``pattern`` appears in the output; ``LabError`` with the explaining log
        lines if the program exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            text, rc = self.poll()
            m = pattern.search(text)
            if m:
                return m
            if rc is not None:
                raise LabError(f"{self.node.name}: {self.name} exited with status {rc} before "
                               f"{what}\n{explain(text)}")
            if time.monotonic() > deadline:
                raise LabError(f"{self.node.name}: {self.name} did not report {what} within "
                               f"{timeout:g} s\n{explain(text)}")
            time.sleep(poll)

    def stop(self, grace: float = 5.0) -> None:
        """TERM the program (as root if it runs as root), KILL it after ``grace``. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        script = (
            'p=$(cat "$1" 2>/dev/null) || exit 0; [ -n "$p" ] || exit 0\n'
            'kill -TERM "$p" 2>/dev/null || exit 0\n'
            'i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt "$2" ]; do sleep 0.1; i=$((i+1)); done\n'
            'if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null; echo KILLED; fi\n'
            'rm -f "$1"\n'
        )
        polls = max(1, int(grace / 0.1))
        try:
            argv = ["sh", "-c", script, "sh", self.pidfile, str(polls)]
            res = self.node.run(argv, timeout=grace + 15, check=False, privileged=self.privileged)
            if "KILLED" in res.stdout:
                log.warning("%s: %s ignored SIGTERM for %g s, killed", self.node.name, self.name, grace)
        finally:
            self.proc.stop()

    def fetch_logs(self, local_dir: Path) -> None:
        try:
            self.proc.fetch_logs(local_dir)
        except Exception as exc:  # logs are a courtesy: never mask the real outcome
            log.warning("could not fetch logs of %s on %s: %s", self.name, self.node.name, exc)


def set_sysctl(node: Node, key: str, value: str) -> tuple[str | None, list[Callable[[], Any]]]:
    """Set a sysctl as root; ``(previous value, undo callbacks)``. Raises ``LabError``."""
    res = node.run([node.tool("sysctl"), "-n", key], timeout=10, check=False)
    before = res.stdout.strip() if res.rc == 0 else None
    if before == value:
        return before, []
    done = node.run([node.tool("sysctl"), "-w", f"{key}={value}"], timeout=10, check=False,
                    privileged=True)
    if done.rc != 0:
        raise LabError(f"{node.name}: cannot set {key}={value}: {done.stderr.strip() or done.stdout.strip()}")
    if before is None:
        return before, []
    return before, [lambda: node.run([node.tool("sysctl"), "-w", f"{key}={before}"], timeout=10,
                                     check=False, privileged=True)]


def enable_forwarding(node: Node) -> list[Callable[[], Any]]:
    """Let ``node`` route IPv4 between its interfaces for the run (restored on teardown)."""
    return set_sysctl(node, "net.ipv4.ip_forward", "1")[1]


def add_route(node: Node, destination: str, via: str | None, dev: str | None) -> list[Callable[[], Any]]:
    """``ip route replace destination [via V] [dev D]`` as root; the undo deletes it."""
    argv = [node.tool("ip"), "route", "replace", destination]
    if via:
        argv += ["via", via]
    if dev:
        argv += ["dev", dev]
    node.run(argv, timeout=15, privileged=True)
    return [lambda: node.run([node.tool("ip"), "route", "del", destination], timeout=15,
                             check=False, privileged=True)]


def redact(text: str, secrets_: Iterable[str]) -> str:
    """``text`` with every secret replaced (for copies of generated configs in a result folder)."""
    for s in secrets_:
        if s:
            text = text.replace(s, "<per-run secret>")
    return text


def shell_join(argv: Sequence[str]) -> str:
    return shlex.join([str(a) for a in argv])


def network_of(address: str) -> ipaddress.IPv4Network:
    return ipaddress.ip_interface(address).network


def call_all(callbacks: Iterable[Callable[[], Any]]) -> list[str]:
    """Call every callback, collecting errors instead of stopping at the first (teardown)."""
    errors = []
    for cb in callbacks:
        try:
            cb()
        except Exception as exc:
            errors.append(str(exc))
            log.warning("teardown step failed: %s", exc)
    return errors
