"""One connected real-lab host (``Node``) and the privileged programs it runs (``Daemon``).

:class:`Node` is one inventory host over one SSH connection, with what real-lab code needs of it:
the sudo prefix, tool paths, files, addresses. :class:`Daemon` is a privileged background program
such as hostapd or srsenb, started and stopped over SSH, whose output is watched for the line
that says it is ready; if it exits or times out first, :class:`RealLabError` carries the log
lines that explain why (:func:`explain`). The helpers below set sysctls and routes for a run and
return the callbacks that undo them (:func:`call_all` runs them all at teardown).

Privileged commands are prefixed with ``sudo -n`` only on hosts with ``sudo: true``; a host whose
SSH user is root needs no sudo. The testbed's own programs (head, tail, iperf3) never run under
sudo.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from testbed.hosts.remote import Completed, Host, RemoteProcess

if TYPE_CHECKING:
    from testbed.lab_section import LabHost

log = logging.getLogger(__name__)

SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def with_sbin(argv: list[str]) -> list[str]:
    """``argv`` run by a shell that adds the sbin folders to PATH (hostapd, iw live there)."""
    return ["sh", "-c", f'PATH="$PATH:{SBIN}"; exec "$@"', "sh", *argv]


class RealLabError(RuntimeError):
    """A real lab could not be brought up or used (the message explains what and why)."""


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
            raise RealLabError(f"{self.name}: interface {ifname} not found: {res.stderr.strip()}")
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
        """Wait until ``pattern`` appears in the output; ``RealLabError`` with the explaining log
        lines if the program exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            text, rc = self.poll()
            m = pattern.search(text)
            if m:
                return m
            if rc is not None:
                raise RealLabError(f"{self.node.name}: {self.name} exited with status {rc} before "
                               f"{what}\n{explain(text)}")
            if time.monotonic() > deadline:
                raise RealLabError(f"{self.node.name}: {self.name} did not report {what} within "
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
    """Set a sysctl as root; ``(previous value, undo callbacks)``. Raises ``RealLabError``."""
    res = node.run([node.tool("sysctl"), "-n", key], timeout=10, check=False)
    before = res.stdout.strip() if res.rc == 0 else None
    if before == value:
        return before, []
    done = node.run([node.tool("sysctl"), "-w", f"{key}={value}"], timeout=10, check=False,
                    privileged=True)
    if done.rc != 0:
        raise RealLabError(f"{node.name}: cannot set {key}={value}: {done.stderr.strip() or done.stdout.strip()}")
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
