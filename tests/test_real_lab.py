"""The real-lab code path end to end, with network namespaces standing in for lab machines.

The fixture builds four "machines" (md, es, ap, ext), each a network namespace with its own
OpenSSH server (keys made for the test) reached from the root namespace over a management veth,
and a wired lab network between them (a bridge in the ap namespace). The inventory names them
exactly as a lab's inventory names its machines (address, port, user, key, known_hosts, python,
interfaces), and the tests drive them through the very code a radio lab uses: ``testbed lab
check``, ``testbed lab deploy`` and ``testbed run`` (``RealHosts`` + the orchestrator), over a
``wired`` link (this machine has no radios).

    root namespace                  tb-test-XXXX-{md,es,ext}            tb-test-XXXX-ap
    tb-test-XXXX<h> 198.18.249.N/30 <-> mgmt0 (sshd :2222)
                                        lab0 198.19.248.k/24  <------>  br0 198.19.248.1/24

The deploy test is the cheap variant: a venv made with --system-site-packages by the base
interpreter of this checkout's venv (it lends its pip; it has no torch), and the wheel installed
with --no-deps (torch is not installed again); the sweep uses this checkout's interpreter.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Network, ip_interface
from pathlib import Path

import pytest
import yaml

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, sshd)"),
    pytest.mark.skipif(not os.access("/usr/sbin/sshd", os.X_OK), reason="openssh-server missing"),
]

ROOT = Path(__file__).resolve().parents[1]
PORT = 2222
LAB_NET = "198.19.248"
HOSTS = ("md", "es", "ap", "ext")


def _free_slash30(taken: list[IPv4Network]) -> IPv4Network:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        used = [ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}").network
                for a in ipr.get_addr(family=socket.AF_INET)]
    nets = list(IPv4Network("198.18.249.0/24").subnets(new_prefix=30))
    start = secrets.randbelow(len(nets))
    for net in nets[start:] + nets[:start]:
        if not any(net.overlaps(u) for u in used + taken):
            return net
    pytest.skip("no free /30 left in 198.18.249.0/24")


class NamespaceLab:
    """Four namespaces with sshd: what an inventory points at."""

    def __init__(self, root: Path):
        self.tag = secrets.token_hex(2)
        self.root = root
        self.ns = {h: f"tb-test-{self.tag}-{h}" for h in HOSTS}
        self.root_if = {h: f"tb-test-{self.tag}{h}" for h in HOSTS}
        self.mgmt: dict[str, str] = {}
        self.lab: dict[str, str] = {}
        self.sshd: list = []
        self.keys = None

    def up(self) -> None:
        from pyroute2 import IPRoute, NetNS, netns

        from testbed.hosts.keys import RunKeys
        from testbed.lab.sshd import SshdInstance

        taken: list[IPv4Network] = []
        for h in HOSTS:
            netns.create(self.ns[h])
            net = _free_slash30(taken)
            taken.append(net)
            root_addr, ns_addr = (str(a) for a in net.hosts())
            with IPRoute() as ipr:
                ipr.link("add", ifname=self.root_if[h], kind="veth",
                         peer={"ifname": "mgmt0", "net_ns_fd": self.ns[h]})
                idx = ipr.link_lookup(ifname=self.root_if[h])[0]
                ipr.addr("add", index=idx, address=root_addr, prefixlen=30)
                ipr.link("set", index=idx, state="up")
            with NetNS(self.ns[h]) as n:
                for ifname in ("lo", "mgmt0"):
                    n.link("set", index=n.link_lookup(ifname=ifname)[0], state="up")
                n.addr("add", index=n.link_lookup(ifname="mgmt0")[0], address=ns_addr,
                       prefixlen=30)
            self.mgmt[h] = ns_addr
        # the wired lab network: a bridge in the ap namespace, one veth per other host
        with NetNS(self.ns["ap"]) as ap:
            ap.link("add", ifname="br0", kind="bridge")
            br = ap.link_lookup(ifname="br0")[0]
            ap.addr("add", index=br, address=f"{LAB_NET}.1", prefixlen=24)
            ap.link("set", index=br, state="up")
            for k, h in enumerate(("md", "es", "ext"), start=11):
                ap.link("add", ifname=f"p-{h}", kind="veth",
                        peer={"ifname": "lab0", "net_ns_fd": self.ns[h]})
                port = ap.link_lookup(ifname=f"p-{h}")[0]
                ap.link("set", index=port, master=br, state="up")
                with NetNS(self.ns[h]) as n:
                    i = n.link_lookup(ifname="lab0")[0]
                    n.addr("add", index=i, address=f"{LAB_NET}.{k}", prefixlen=24)
                    n.link("set", index=i, state="up")
                self.lab[h] = f"{LAB_NET}.{k}"
        self.keys = RunKeys.create(self.root / "keys", [(h, self.mgmt[h], PORT) for h in HOSTS])
        for h in HOSTS:
            sshd = SshdInstance.from_run_keys(self.keys, h, self.ns[h], self.root)
            self.sshd.append(sshd)
            sshd.start()

    def down(self) -> None:
        from pyroute2 import IPRoute, netns

        from testbed.lab.netns import stop_namespace_processes

        for sshd in self.sshd:
            try:
                sshd.stop()
            except Exception:
                pass
        for h in HOSTS:
            if (Path("/run/netns") / self.ns[h]).exists():
                stop_namespace_processes(self.ns[h], term_grace_s=1.0)
        with IPRoute() as ipr:
            for name in self.root_if.values():
                found = ipr.link_lookup(ifname=name)
                if found:
                    ipr.link("del", index=found[0])
        for name in self.ns.values():
            if name in netns.listnetns():
                netns.remove(name)

    def inventory(self, **overrides) -> list[dict]:
        hosts = []
        for h in HOSTS:
            entry = {"name": h, "role": h, "address": self.mgmt[h], "port": PORT, "user": "root",
                     "key_file": str(self.keys.client.private),
                     "known_hosts": str(self.keys.known_hosts), "python": sys.executable,
                     "torch_threads": 1}
            if h != "ap":
                entry["interfaces"] = {"lab": "lab0", "control": "mgmt0"}
            entry.update(overrides.get(h, {}))
            hosts.append(entry)
        return hosts

    def scenario(self, path: Path, **overrides) -> Path:
        data = {
            "name": "real-lab-ci",
            "description": "namespaces with sshd standing in for lab machines",
            "lab": {"hosts": self.inventory(**overrides)},
            "link": {"kind": "wired"},
            "sweep": {"loads_mbit": [0, 2], "settle_s": 0.3},
            "model": "mobilenet_v2",
            "configurations": [{"name": "ec", "mode": "EC", "model": "mobilenet_v2"}],
            "frames": 3,
            "warmup": 1,
        }
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


@pytest.fixture(scope="module")
def nslab(tmp_path_factory):
    if shutil.which("ip") is None:
        pytest.skip("iproute2 missing")
    lab = NamespaceLab(tmp_path_factory.mktemp("real-lab"))
    try:
        try:
            lab.up()
        except OSError as exc:
            pytest.skip(f"cannot build network namespaces here: {exc}")
        yield lab
    finally:
        lab.down()


def _testbed(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _processes_with(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


# --------------------------------------------------------------------------- lab check


def test_lab_check_reports_every_host_and_exits_0(nslab, tmp_path):
    scenario = nslab.scenario(tmp_path / "lab.yaml")
    t0 = time.monotonic()
    proc = _testbed("lab", "check", str(scenario))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    print(f"lab check: {time.monotonic() - t0:.1f} s\n{out}")
    for h in HOSTS:
        assert f"root@{nslab.mgmt[h]}:{PORT}" in out
    assert "logged in as root" in out and "Python 3." in out
    assert "testbed 0.1.0" in out and "iperf3=" in out
    assert f"lab=lab0 UP, {nslab.lab['md']}/24" in out or f"lab=lab0 up" in out.lower()
    assert "offset" in out and "informational" in out
    assert "ready: 0 failed" in out


def test_lab_check_fails_clearly(nslab, tmp_path):
    from testbed.labcheck import FAIL, failed, run_checks
    from testbed.scenario import load_scenario

    scenario = load_scenario(nslab.scenario(
        tmp_path / "bad.yaml",
        ext={"port": PORT + 1, "known_hosts": None,   # nothing listens there
             "host_key": nslab.keys.hosts["ext"].key.public_line},
        es={"interfaces": {"lab": "nosuch0"}},      # an interface the host does not have
        md={"tools": {"iperf3": "/opt/none/iperf3"}},  # a tool that is missing
    ))
    rows = run_checks(scenario, ["md", "es", "ext"], connect_timeout=3)
    assert failed(rows)
    bad = {(r.host, r.check): r.detail for r in rows if r.status == FAIL}
    assert "cannot reach sshd" in bad[("ext", "ssh")]
    assert "nosuch0 does not exist" in bad[("es", "interfaces")]
    assert "missing iperf3" in bad[("md", "tools")] and "apt install iperf3" in bad[("md", "tools")]
    proc = _testbed("lab", "check", str(tmp_path / "bad.yaml"), "--host", "es")
    assert proc.returncode == 1 and "NOT ready" in proc.stdout


def test_inventory_problems_name_file_key_and_expectation(nslab, tmp_path):
    from testbed.inventory import InventoryError, require_local
    from testbed.scenario import load_scenario

    path = nslab.scenario(tmp_path / "inv.yaml", md={"key_file": str(tmp_path / "no-key")},
                          es={"known_hosts": str(tmp_path / "no-known-hosts")})
    with pytest.raises(InventoryError) as ei:
        require_local(load_scenario(path))
    text = str(ei.value)
    assert f"{path}: lab.hosts[0].key_file: expected an existing private key file" in text
    assert f"{path}: lab.hosts[1].known_hosts: expected an existing known_hosts file" in text
    proc = _testbed("run", str(path), "--results", str(tmp_path / "results"))
    assert proc.returncode == 2 and "lab.hosts[0].key_file" in proc.stderr


# --------------------------------------------------------------------------- deploy


def test_lab_deploy_installs_the_wheel_in_a_venv(nslab, tmp_path):
    venv = tmp_path / "md-venv"
    path = nslab.scenario(tmp_path / "deploy.yaml", md={"python": f"{venv}/bin/python"})
    t0 = time.monotonic()
    # the base interpreter of this checkout's venv (it has pip, not torch): with
    # --system-site-packages the new venv borrows its pip instead of bootstrapping its own
    base = Path(sys.base_prefix) / "bin" / "python3"
    proc = _testbed("lab", "deploy", str(path), "--host", "md", "--no-deps",
                    "--system-site-packages", "--base-python", str(base))
    print(f"lab deploy: {time.monotonic() - t0:.1f} s\n{proc.stdout}{proc.stderr}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"created {venv}: testbed 0.1.0" in proc.stdout
    marker = json.loads((venv / "hnd-testbed-deploy.json").read_text())
    assert marker["version"] == "0.1.0" and len(marker["sha256"]) == 64 and marker["no_deps"]
    # the deployed code is the wheel's, not this checkout's
    where = subprocess.run([f"{venv}/bin/python", "-c", "import testbed; print(testbed.__file__)"],
                           capture_output=True, text=True, cwd="/", check=True).stdout
    assert where.startswith(str(venv))
    check = _testbed("lab", "check", str(path), "--host", "md")
    assert f"deployed wheel sha256 {marker['sha256'][:12]}" in check.stdout
    assert "torch not found" in check.stdout  # --no-deps: said, not hidden
    assert not (ROOT / "build").exists(), "the wheel is built from a copy: the tree stays clean"


# --------------------------------------------------------------------------- a sweep


def test_two_step_sweep_through_testbed_run(nslab, tmp_path):
    from testbed.records import read_records

    path = nslab.scenario(tmp_path / "sweep.yaml", md={"testbed_path": str(ROOT)})
    t0 = time.monotonic()
    proc = _testbed("run", str(path), "--results", str(tmp_path / "results"), timeout=600)
    print(f"sweep: {time.monotonic() - t0:.1f} s")
    (out,) = list((tmp_path / "results").iterdir())
    manifest = json.loads((out / "manifest.json").read_text())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert manifest["status"] == "complete"
    assert set(manifest["steps"]) == {"L0-r0-ec", "L2-r0-ec"}
    assert all(s["status"] == "ok" for s in manifest["steps"].values())
    lab = manifest["lab"]
    assert lab["kind"] == "real" and lab["link"]["kind"] == "wired"
    assert lab["hosts"]["es"]["address"] == nslab.lab["es"]
    assert lab["python"].endswith("/python") and lab["python"].startswith("/tmp/testbed-")
    assert lab["tcp_sysctls"]["md"]["net.ipv4.tcp_slow_start_after_idle"]["value"] == "1"
    step = manifest["steps"]["L2-r0-ec"]
    assert 1.5 <= step["load_achieved_mbit"] <= 2.5, step
    records = list(read_records(out / "frames.csv"))
    assert len(records) == 2 * (3 + 1)
    assert all(r.status == "ok" and abs(r.md_proc + r.comm + r.es_proc - r.total) < 1e-3
               for r in records)
    tail_log = (out / "logs" / "es.tail.err").read_text()
    assert f"tail listening on {nslab.lab['es']}" in tail_log
    assert f"{nslab.lab['md']}:" in tail_log, "frames came over the lab network"
    run_id = manifest["run_id"]
    assert not Path(f"/tmp/testbed-{run_id}").exists(), "the hosts' work folders are removed"
    assert _processes_with(f"testbed-{run_id}") == []


def test_step_conditions_probe_the_link(nslab, tmp_path):
    from testbed.realhosts import RealHosts
    from testbed.scenario import load_scenario

    scenario = load_scenario(nslab.scenario(tmp_path / "probe.yaml"))
    run_id = secrets.token_hex(3)
    with RealHosts(scenario, tmp_path / "run", run_id) as hosts:
        assert hosts.python == sys.executable  # one interpreter everywhere: no launcher
        assert hosts.address("md") == nslab.lab["md"]
        t0 = time.monotonic()
        first = hosts.step_conditions()
        second = hosts.step_conditions()
        took = time.monotonic() - t0
    probe = first["probe"]
    assert "error" not in probe and "capacity_error" not in probe, probe
    assert 0 < probe["rtt_ms"]["min"] < 50 and probe["rtt_ms"]["n"] == 5
    assert probe["capacity_mbit"] > 10
    assert second["probe"]["capacity_mbit"] > 10
    assert took < 12, f"two probes took {took:.1f} s: they must stay short"
    assert "radio" not in first  # a wired link has no radio state
    assert not Path(f"/tmp/testbed-{run_id}").exists()


# --------------------------------------------------------------------------- radio links, stand-ins
#
# No radios here: hostapd, wpa_supplicant and iw are replaced by small scripts that print what the
# real programs print, on idle veth interfaces. What runs is the real bring-up code: configurations
# copied over SFTP, programs started over SSH and watched for their readiness lines, addresses
# and routes, the radio state per step, and the teardown.

FAKE_HOSTAPD = """#!/bin/sh
grep -q '^wpa_passphrase=' "$1" || { echo "no passphrase"; exit 1; }
iface=$(sed -n 's/^interface=//p' "$1")
echo "Configuration file: $1"
echo "$iface: interface state UNINITIALIZED->ENABLED"
echo "$iface: AP-ENABLED"
exec sleep 300
"""
FAKE_HOSTAPD_BROKEN = """#!/bin/sh
echo "Configuration file: $1"
echo "nl80211: 'nl80211' generic netlink not found"
echo "Failed to initialize driver 'nl80211'"
exit 1
"""
FAKE_WPA = """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -i) iface=$2; shift;; -c) conf=$2; shift;; esac; shift; done
grep -q 'psk="' "$conf" || exit 1
echo "Successfully initialized wpa_supplicant"
echo "$iface: CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=0 id_str=]"
exec sleep 300
"""
FAKE_IW = """#!/bin/sh
case "$*" in
  *" link") printf 'Connected to 02:00:00:00:01:00 (on %s)\\n\\tSSID: hnd-testbed\\n\\tfreq: 2437\\n\\tsignal: -42 dBm\\n\\ttx bitrate: 54.0 MBit/s\\n' "$2";;
  *"station dump") printf 'Station 02:00:00:00:00:07 (on %s)\\n\\ttx retries:\\t3\\n\\ttx failed:\\t0\\n\\tsignal:  \\t-40 dBm\\n' "$2";;
  *"get power_save") echo "Power save: on";;
  *"set power_save"*) exit 0;;
  *) exit 1;;
esac
"""


@pytest.fixture
def wifi_lab(nslab, tmp_path):
    from pyroute2 import NetNS

    for h in ("md", "ap", "ext"):
        with NetNS(nslab.ns[h]) as n:
            # this kernel has no dummy interfaces: a veth pair whose other end stays idle
            n.link("add", ifname="wl0", kind="veth", peer={"ifname": "wl0p"})
            for ifname in ("wl0", "wl0p"):
                n.link("set", index=n.link_lookup(ifname=ifname)[0], state="up")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("hostapd", FAKE_HOSTAPD), ("hostapd-broken", FAKE_HOSTAPD_BROKEN),
                       ("wpa_supplicant", FAKE_WPA), ("iw", FAKE_IW)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    tools = {"hostapd": str(bin_dir / "hostapd"), "wpa_supplicant": str(bin_dir / "wpa_supplicant"),
             "iw": str(bin_dir / "iw")}
    try:
        yield nslab, tools, bin_dir
    finally:
        for h in ("md", "ap", "ext"):
            with NetNS(nslab.ns[h]) as n:
                found = n.link_lookup(ifname="wl0")
                if found:
                    n.link("del", index=found[0])


def _wifi_scenario(nslab, path, tools):
    from testbed.scenario import load_scenario

    wlan = {"wlan": "wl0"}
    nslab.scenario(path, md={"interfaces": wlan, "tools": tools},
                   ext={"interfaces": wlan, "tools": tools},
                   ap={"interfaces": {**wlan, "lab": "br0"}, "tools": tools})
    data = yaml.safe_load(path.read_text())
    data["link"] = {"kind": "wifi"}
    data["lab"]["radio"] = {"country_code": "DE", "channel": 11}
    path.write_text(yaml.safe_dump(data))
    return load_scenario(path)


def _ns_run(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True).stdout


def test_wifi_link_bring_up_and_teardown_with_stand_ins(wifi_lab, tmp_path):
    from testbed.realhosts import RealHosts

    nslab, tools, _ = wifi_lab
    scenario = _wifi_scenario(nslab, tmp_path / "wifi.yaml", tools)
    run_dir = tmp_path / "run"
    with RealHosts(scenario, run_dir, secrets.token_hex(3)) as hosts:
        assert hosts.address("ap") == "198.19.80.1" and hosts.address("md") == "198.19.80.11"
        assert hosts.address("ext") == "198.19.80.12"
        assert hosts.address("es") == nslab.lab["es"]  # wired behind the AP
        assert "198.19.80.11/24" in _ns_run(nslab.ns["md"], "ip", "-4", "addr", "show", "wl0")
        assert f"{nslab.lab['es']} via 198.19.80.1" in _ns_run(nslab.ns["md"], "ip", "route")
        assert "198.19.80.0/24 via 198.19.248.1" in _ns_run(nslab.ns["es"], "ip", "route")
        radio = hosts.link.radio_state()
        assert radio["md"]["signal_dbm"] == -42 and radio["md"]["tx_bitrate_mbit"] == 54.0
        assert radio["ap"]["stations"]["02:00:00:00:00:07"]["tx_retries"] == 3
        again = hosts.link.radio_state()
        assert again["ap"]["stations"]["02:00:00:00:00:07"]["tx_retries_delta"] == 0
        manifest = hosts.manifest()
        assert manifest["link"]["settings"]["channel"] == 11
        passphrase = hosts.link.passphrase
    assert passphrase not in json.dumps(manifest)
    kept = (run_dir / "lab" / "hostapd.conf").read_text()
    assert "wpa_passphrase=<per-run secret>" in kept and passphrase not in kept
    assert "channel=11" in kept and "country_code=DE" in kept
    # teardown: addresses and routes gone, programs stopped, files with the secret removed
    assert "198.19.80" not in _ns_run(nslab.ns["md"], "ip", "-4", "addr", "show", "wl0")
    assert "198.19.80" not in _ns_run(nslab.ns["es"], "ip", "route")
    assert _processes_with(str(tools["hostapd"])) == [] and _processes_with(tools["wpa_supplicant"]) == []
    assert (run_dir / "logs" / "ap.hostapd.out").read_text().count("AP-ENABLED") == 1


def test_wifi_failure_explains_itself_and_leaves_nothing(wifi_lab, tmp_path):
    from testbed.realhosts import RealHosts
    from testbed.realnode import RealLabError

    nslab, tools, bin_dir = wifi_lab
    broken = dict(tools, hostapd=str(bin_dir / "hostapd-broken"))
    scenario = _wifi_scenario(nslab, tmp_path / "wifi.yaml", broken)
    run_id = secrets.token_hex(3)
    with pytest.raises(RealLabError) as ei:
        with RealHosts(scenario, tmp_path / "run", run_id):
            pass
    text = str(ei.value)
    assert "ap: hostapd exited with status 1 before AP-ENABLED on wl0" in text
    assert "Failed to initialize driver 'nl80211'" in text and "AP mode" in text
    assert "198.19.80" not in _ns_run(nslab.ns["ap"], "ip", "-4", "addr", "show", "wl0")
    assert not Path(f"/tmp/testbed-{run_id}").exists()


FAKE_SRSEPC = """#!/bin/sh
grep -q '^db_file = ' "$1" && echo "HSS Initialized." && echo "SP-GW Initialized."
exec sleep 300
"""
FAKE_SRSENB = """#!/bin/sh
grep -q '^rr_config = ' "$1" && printf '\\n==== eNodeB started ===\\nType <t> to view trace\\n'
exec sleep 300
"""
FAKE_SRSUE = """#!/bin/sh
tun=$(sed -n 's/^ip_devname = //p' "$1")
case "$1" in *ue-md.conf) ip=172.16.0.2;; *) ip=172.16.0.9;; esac
ip link add "$tun" type veth peer name "${tun}p" && ip link set "$tun" up && ip addr add "$ip/24" dev "$tun"
trap 'ip link del "$tun"; exit 0' TERM
echo "Attaching UE..."
echo "Network attach successful. IP: $ip"
while :; do sleep 0.2; done
"""


def test_lte_link_bring_up_and_teardown_with_stand_ins(nslab, tmp_path):
    from testbed.realhosts import RealHosts
    from testbed.scenario import load_scenario

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {}
    for name, text in (("srsepc", FAKE_SRSEPC), ("srsenb", FAKE_SRSENB), ("srsue", FAKE_SRSUE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
        tools[name] = str(bin_dir / name)
    path = nslab.scenario(tmp_path / "lte.yaml",
                          ap={"role": "enb", "interfaces": {"lab": "br0"}, "tools": tools,
                              "radio": {"device_name": "uhd", "device_args": "type=b200"}},
                          md={"interfaces": {"lte": "tun_md", "lab": "lab0"}, "tools": tools},
                          ext={"interfaces": {"lte": "tun_ext", "lab": "lab0"}, "tools": tools})
    data = yaml.safe_load(path.read_text())
    data["link"] = {"kind": "lte"}
    data["lab"]["radio"] = {"n_prb": 25, "attach_timeout_s": 20}
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    run_dir = tmp_path / "run"
    with RealHosts(scenario, run_dir, secrets.token_hex(3)) as hosts:
        assert hosts.address("md") == "172.16.0.2" and hosts.address("ext") == "172.16.0.9"
        assert hosts.address("ap") == "172.16.0.1" and hosts.address("es") == nslab.lab["es"]
        assert f"{nslab.lab['es']} dev tun_md" in _ns_run(nslab.ns["md"], "ip", "route")
        assert "172.16.0.0/24 via 198.19.248.1" in _ns_run(nslab.ns["es"], "ip", "route")
        manifest = hosts.manifest()["link"]
        assert manifest["notes"] == ["ext: attached with 172.16.0.9, planned 172.16.0.3"]
        subscribers = dict(hosts.link.subscribers)
    kept = (run_dir / "lab" / "user_db.csv").read_text()
    assert subscribers["md"].k not in kept and "<per-run secret>" in kept
    assert subscribers["md"].imsi in kept  # the IMSI is not a secret; K and OPc are
    assert "n_prb = 25" in (run_dir / "lab" / "enb.conf").read_text()
    assert "tun_md" not in _ns_run(nslab.ns["md"], "ip", "link")  # srsue stopped: tun gone
    assert "172.16.0.0/24" not in _ns_run(nslab.ns["es"], "ip", "route")
    assert _processes_with(str(bin_dir)) == []
