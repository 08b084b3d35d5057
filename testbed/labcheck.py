"""``testbed lab check``: is every host of a real lab ready for a run?

For every host of ``lab.hosts``, over SSH: reachability and authentication (host key pinned),
sudo where the host's role needs root, the Python and testbed versions of the interpreter the
run will use, the programs its role needs (hostapd, wpa_supplicant, iw, srsepc/srsenb/srsue,
iperf3...), the interfaces the inventory names, and the host's clock offset to this controller
(informational only: no delay component depends on clocks agreeing). The result is a list of
:class:`Check` rows; any ``FAIL`` makes the command exit with status 1.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from testbed import __version__
from testbed.hosts.remote import Host, HostError
from testbed.inventory import access_for, check_local, interfaces_needed, needs_root, tools_needed
from testbed.lab_section import LabHost
from testbed.realnode import Node
from testbed.scenario import Scenario

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"

INSTALL_HINTS = {
    "hostapd": "apt install hostapd",
    "wpa_supplicant": "apt install wpasupplicant",
    "iw": "apt install iw",
    "ip": "apt install iproute2",
    "ss": "apt install iproute2",
    "iperf3": "apt install iperf3",
    "sysctl": "apt install procps",
    "srsepc": "build srsRAN 4G (release_23_11) or apt install srsran where packaged",
    "srsenb": "build srsRAN 4G (release_23_11) or apt install srsran where packaged",
    "srsue": "build srsRAN 4G (release_23_11) or apt install srsran where packaged",
}
TUN_KEYS = ("lte", "sgi")

_PY_INFO = r"""
import json, os, platform, sys
info = {"python": platform.python_version(), "executable": sys.executable}
try:
    import testbed
    info["testbed"] = testbed.__version__
    info["testbed_file"] = os.path.dirname(testbed.__file__)
except Exception as e:
    info["testbed_error"] = "%s: %s" % (type(e).__name__, e)
try:
    from importlib import metadata
    for name in ("torch", "torchvision", "hnd-testbed"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
except Exception:
    pass
marker = os.path.join(sys.prefix, "hnd-testbed-deploy.json")
if os.path.exists(marker):
    with open(marker) as f:
        info["deployed"] = json.load(f)
print(json.dumps(info))
"""


@dataclass(frozen=True)
class Check:
    host: str
    role: str
    check: str
    status: str
    detail: str


def _python_argv(h: LabHost) -> list[str]:
    argv = [h.python, "-c", _PY_INFO]
    if h.testbed_path:
        return ["env", f"PYTHONPATH={h.testbed_path}", *argv]
    return argv


def check_host(h: LabHost, scenario: Scenario, *, connect_timeout: float = 10.0) -> list[Check]:
    rows: list[Check] = []

    def add(check: str, status: str, detail: str) -> None:
        rows.append(Check(h.name, h.role, check, status, detail))

    try:
        host = Host(access_for(h), connect_timeout=connect_timeout)
        t0 = time.monotonic()
        host.connect()
    except (HostError, ValueError) as exc:
        add("ssh", FAIL, str(exc))
        return rows
    try:
        node = Node(h, host)
        add("ssh", OK, f"{h.user}@{h.address}:{h.port} in {time.monotonic() - t0:.2f} s, host key "
            "pinned")
        _check_sudo(node, scenario, add)
        _check_python(node, add)
        _check_tools(node, scenario, add)
        _check_interfaces(node, scenario, add)
        _check_clock(node, add)
    except HostError as exc:
        add("ssh", FAIL, f"connection failed during the checks: {exc}")
    finally:
        host.close()
    return rows


def _check_sudo(node: Node, scenario: Scenario, add) -> None:
    h = node.spec
    why = needs_root(h, scenario)
    if node.is_root:
        add("sudo", OK, "logged in as root" + (f" (runs {'; '.join(why)})" if why else ""))
        return
    if h.sudo:
        res = node.host.run(["sudo", "-n", "true"], timeout=15, check=False)
        if res.rc == 0:
            add("sudo", OK, "sudo -n works" + (f" (for {'; '.join(why)})" if why else ""))
        else:
            add("sudo", FAIL if why else WARN,
                f"sudo -n true failed ({res.stderr.strip()[:200] or res.rc}): add a NOPASSWD "
                f"sudoers rule for {h.user}")
        return
    if why:
        add("sudo", FAIL, f"this {h.role} runs {'; '.join(why)} as root: set sudo: true (with a "
            "NOPASSWD sudoers rule) or log in as root")
    else:
        add("sudo", INFO, "not needed by this role")


def _check_python(node: Node, add) -> None:
    h = node.spec
    runs_testbed = h.role in ("md", "es")
    res = node.host.run(_python_argv(h), timeout=60, check=False)
    try:
        info = json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        status = FAIL if runs_testbed else INFO
        add("python", status, f"{h.python}: cannot run ({(res.stderr or res.stdout).strip()[-200:] or res.rc})"
            + (" -- run `testbed lab deploy`" if runs_testbed else " (not needed by this role)"))
        return
    add("python", OK, f"{h.python}: Python {info['python']}")
    if "testbed" in info:
        same = info["testbed"] == __version__
        deployed = info.get("deployed", {})
        extra = f", deployed wheel sha256 {deployed['sha256'][:12]}" if deployed.get("sha256") else ""
        torch = f", torch {info['torch']}" if "torch" in info else ", no torch" if runs_testbed else ""
        add("testbed", OK if same else WARN,
            f"testbed {info['testbed']} at {info.get('testbed_file')}{torch}{extra}"
            + ("" if same else f" (this controller has {__version__}: `testbed lab deploy`)"))
        if runs_testbed and "torch" not in info:
            rows_status = WARN
            add("torch", rows_status, "torch not found for this python: the head/tail need it "
                "(deploy without --no-deps, or --system-site-packages where torch is installed)")
    else:
        add("testbed", FAIL if runs_testbed else INFO,
            f"{info.get('testbed_error', 'not importable')}"
            + (" -- `testbed lab deploy` installs it" if runs_testbed else " (not needed by this role)"))


def _check_tools(node: Node, scenario: Scenario, add) -> None:
    needed = tools_needed(node.spec, scenario)
    script = 'for t in "$@"; do p=$(command -v "$t" 2>/dev/null) && echo "$t $p" || echo "$t -"; done'
    res = node.run(["sh", "-c", script, "sh", *[node.tool(t) for t in needed]], timeout=20,
                   check=False)
    found = {}
    for line in res.stdout.splitlines():
        name, _, path = line.partition(" ")
        found[name] = path
    missing = [t for t in needed if found.get(node.tool(t), "-") == "-"]
    present = [f"{t}={found[node.tool(t)]}" for t in needed if t not in missing]
    if missing:
        hints = "; ".join(f"{t}: {INSTALL_HINTS.get(t, 'install it')}" for t in missing)
        add("tools", FAIL, f"missing {', '.join(missing)} ({hints})")
    if present:
        add("tools", OK, ", ".join(present))


def _check_interfaces(node: Node, scenario: Scenario, add) -> None:
    h = node.spec
    if not h.interfaces:
        need = interfaces_needed(h, scenario)
        add("interfaces", FAIL if need else INFO,
            f"none named (needs {', '.join(need)})" if need else "none named")
        return
    res = node.run(["ip", "-j", "link", "show"], timeout=15, check=False)
    try:
        links = {x["ifname"]: x for x in json.loads(res.stdout)}
    except (json.JSONDecodeError, KeyError, TypeError):
        add("interfaces", FAIL, f"cannot list interfaces: {res.stderr.strip()[:200]}")
        return
    for logical, ifname in h.interfaces.items():
        if logical in TUN_KEYS:
            if ifname in links:
                add("interfaces", WARN, f"{logical}={ifname} exists already: is an srsue/srsepc "
                    "of another run still running?")
            else:
                add("interfaces", OK, f"{logical}={ifname} (a tun made by srsRAN at run time)")
            continue
        if ifname not in links:
            add("interfaces", FAIL, f"{logical}={ifname} does not exist (have "
                f"{', '.join(sorted(links)) or 'none'})")
            continue
        state = links[ifname].get("operstate", "?")
        detail = f"{logical}={ifname} {state}"
        status = OK
        if logical == "wlan":
            wireless = node.run(["sh", "-c", 'test -e "/sys/class/net/$1/phy80211"', "sh", ifname],
                                timeout=10, check=False).rc == 0
            if not wireless:
                status, detail = FAIL, detail + ": not a wireless (nl80211) interface"
            else:
                phy = node.run([node.tool("iw"), "dev", ifname, "info"], timeout=10, check=False)
                m = re.search(r"type (\w+)", phy.stdout)
                detail += f", wireless ({m.group(1) if m else 'type ?'})"
        else:
            addrs = node.ipv4(ifname)
            detail += f", {', '.join(addrs) or 'no IPv4 address'}"
            if logical in ("lab", "data") and not addrs:
                status = FAIL
        add("interfaces", status, detail)


def clock_offset(host: Host, samples: int = 3) -> tuple[float, float]:
    """(offset, uncertainty) in seconds of the host's wall clock to ours (best of ``samples``)."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        t0 = time.time()
        out = host.run(["date", "+%s.%N"], timeout=10, kill_on_timeout=False).stdout.strip()
        t1 = time.time()
        remote = float(out)
        estimate = (remote - (t0 + t1) / 2, (t1 - t0) / 2)
        if best is None or estimate[1] < best[1]:
            best = estimate
    assert best is not None
    return best


def _check_clock(node: Node, add) -> None:
    try:
        offset, err = clock_offset(node.host, samples=4)
    except (HostError, ValueError) as exc:
        add("clock", INFO, f"could not read the clock: {exc}")
        return
    add("clock", INFO, f"offset {offset * 1e3:+.1f} ms (+/- {err * 1e3:.1f} ms) to this controller "
        "(informational: no delay component depends on it)")


def run_checks(scenario: Scenario, hosts: Sequence[str] = (), *,
               connect_timeout: float = 10.0) -> list[Check]:
    """Every check of every host (or of ``hosts``), inventory problems first."""
    rows: list[Check] = []
    by_index = {i: h for i, h in enumerate(scenario.lab.hosts)}
    for problem in check_local(scenario):
        m = re.search(r"lab\.hosts\[(\d+)\]", problem)
        h = by_index.get(int(m.group(1))) if m else None
        if hosts and h is not None and h.name not in hosts:
            continue
        rows.append(Check(h.name if h else "-", h.role if h else "-", "inventory", FAIL, problem))
    chosen = [h for h in scenario.lab.hosts if not hosts or h.name in hosts]
    if chosen:  # hosts are checked at once (each over its own connection), reported in order
        with ThreadPoolExecutor(max_workers=min(8, len(chosen))) as pool:
            for result in pool.map(lambda h: check_host(h, scenario,
                                                        connect_timeout=connect_timeout), chosen):
                rows.extend(result)
    return rows


def format_check_table(rows: Sequence[Check]) -> str:
    headers = ("host", "role", "check", "status", "detail")
    widths = [max([len(headers[i])] + [len(str(getattr(r, f))) for r in rows])
              for i, f in enumerate(("host", "role", "check", "status"))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers[:4], widths)) + "  " + headers[4]]
    for r in rows:
        cells = (r.host, r.role, r.check, r.status)
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + r.detail)
    return "\n".join(lines)


def failed(rows: Sequence[Check]) -> bool:
    return any(r.status == FAIL for r in rows)
