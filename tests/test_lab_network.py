"""The emulated lab's network layer: namespaces, shaping accuracy, fairness, teardown, cleanup.

Needs root and network namespaces (marked ``root``; skipped otherwise). All traffic flows only
between namespaces these tests create; every wait is bounded. Accuracy checks follow Mininet's
test_hifi.py: real iperf3 flows through the shaped medium, compared with what the shaping report
says to expect (qdiscs charge whole 1514-byte frames: TCP goodput = rate * 1448/1514).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from testbed.lab import backends, capabilities, cleanup, cpu, host_shaping, names, netns, procs, queue_math, runs
from testbed.lab.plan import HostPlan, LabError, LabPlan, LinkShape
from testbed.lab.namespace_lab import NamespaceLab

from tests.childproc import restore_sigint

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[1]
FRAME = queue_math.FRAME_BYTES


# --------------------------------------------------------------------------- gating


def _netns_usable() -> str | None:
    """None if we can create a namespace, else the reason."""
    if os.geteuid() != 0:
        return "needs root"
    rid = names.new_run_id()
    ns = names.namespace_name(rid, "chk")
    try:
        netns.create_namespace(ns)
    except Exception as e:  # pragma: no cover - depends on the machine
        return f"network namespaces unavailable: {e}"
    finally:
        netns.remove_namespace(ns)
    return None


_REASON = _netns_usable()
lab_only = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")


@pytest.fixture(scope="module")
def caps() -> capabilities.Capabilities:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, qdiscs, cgroups)")
    if _REASON:
        pytest.skip(_REASON)
    return capabilities.detect()


# --------------------------------------------------------------------------- helpers


def leftovers(run_id: str) -> dict[str, list[str]]:
    """Everything owned by ``run_id`` that still exists anywhere we look."""
    found = {
        "namespaces": netns.owned_namespaces(run_id),
        "root_links": [],
        "cgroups": cpu.owned_run_dirs(run_id),
        "record": [p for p in [runs.record_path(run_id)] if os.path.exists(p)],
    }
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if names.is_owned_interface(ifname, run_id):
                found["root_links"].append(ifname)
    return {k: v for k, v in found.items() if v}


def plan(**kw) -> LabPlan:
    medium = kw.pop("medium", LinkShape(rate_mbit=24, queue_packets=50))
    return LabPlan.star(medium, **kw)


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str | None:
    """Read ``proc.stdout`` (raw fd, no Python buffering) until a line holds ``needle``.

    Returns that line, or None on EOF/timeout. Bounded by ``timeout``."""
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
        complete = buf[: buf.rfind(b"\n") + 1]  # only whole lines
        for line in complete.decode(errors="replace").splitlines():
            if needle in line:
                return line
    return None


def start_iperf_server(lab: NamespaceLab, host: str, port: int) -> subprocess.Popen:
    """``iperf3 -s -1`` in ``host``; returns once it listens (bounded: 5 s)."""
    proc = lab.popen(host, ["iperf3", "-s", "-1", "--forceflush", "-B", lab.address(host),
                            "-p", str(port)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if read_until(proc, "Server listening", 5) is None:
        proc.kill()
        proc.communicate()
        raise AssertionError("iperf3 server did not start")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except Exception:
        pass


def iperf_json(proc_or_result) -> dict:
    out = proc_or_result.stdout if hasattr(proc_or_result, "stdout") else proc_or_result
    data = json.loads(out)
    assert "error" not in data, data.get("error")
    return data


def tcp_goodput_mbit(data: dict) -> float:
    return data["end"]["sum_received"]["bits_per_second"] / 1e6


def udp_received_mbit(data: dict) -> float:
    end = data["end"]
    s = end.get("sum_received") or end["sum"]
    return s["bits_per_second"] / 1e6


# --------------------------------------------------------------------------- no root needed


def test_names_are_owned_and_short() -> None:
    rid = names.new_run_id()
    assert names.RUN_ID_RE.match(rid)
    for host in ("md", "es", "ap", "enb", "ext", "ext12"):
        ns = names.namespace_name(rid, host)
        assert names.parse_namespace_name(ns) == (rid, host)
        for ifname in names.veth_names(rid, host):
            assert len(ifname) <= names.IFNAMSIZ
            assert names.is_owned_interface(ifname, rid)
            assert not names.is_owned_interface(ifname, "000000" if rid != "000000" else "111111")
    ifb = names.ifb_name(rid, "dl")
    assert names.is_owned_ifb(ifb, rid) and len(ifb) <= names.IFNAMSIZ
    assert names.is_owned_cgroup(names.cgroup_name(rid), rid)
    # look-alikes that are NOT ours
    for other in ("tb-test-proto", "tb-test-4700", "tb-12345-md", "tb-abcdefg-md",
                  "tb-abcdef-toolong", "tb-ABCDEF-md", "tbf0", "tb-test-4700r", "eth0"):
        assert not names.is_owned_namespace(other)
        assert not names.is_owned_interface(other)
    with pytest.raises(ValueError):
        names.namespace_name(rid, "toolong")
    with pytest.raises(ValueError):
        names.namespace_name("xyz", "md")


def test_plan_validation_and_address_plan() -> None:
    from testbed.lab.plan import address_plan

    p = LabPlan.star(LinkShape(rate_mbit=24), run_id="abc123")
    a = address_plan(p)
    assert a["md"].address == "198.18.1.2" and a["md"].router_address == "198.18.1.1"
    assert a["ext"].address == "198.18.2.2"
    assert a["es"].address == "198.19.0.2" and a["es"].router_address == "198.19.0.1"
    with pytest.raises(ValueError):
        LabPlan("abc123", (HostPlan("md", "md"),), LinkShape(rate_mbit=1))  # no router
    with pytest.raises(ValueError):
        HostPlan("md", "md", sysctls={"kernel.pid_max": "1"})  # not per-namespace
    with pytest.raises(ValueError):
        LinkShape(rate_mbit=0)
    assert queue_math.expected_tcp_goodput_mbit(24) == pytest.approx(24 * 1448 / 1514)


def test_netem_request_encodes_as_intended() -> None:
    """The hand-built netem request (no bogus TCA_RATE) round-trips through pyroute2's codec."""
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    opts = host_shaping._netem_options(rate_Bps=3_000_000, overhead=20, delay_ms=1.5, jitter_ms=0.25,
                                  loss_pct=0.5, limit_packets=77)
    m = tcmsg()
    m["index"], m["handle"], m["parent"] = 1, 0x10000, host_shaping.TC_H_ROOT
    m["attrs"] = [["TCA_KIND", "netem"], ["TCA_OPTIONS", opts]]
    m.encode()
    back = tcmsg(m.data)
    back.decode()
    assert back.get_attr("TCA_RATE") is None
    d = host_shaping._decode_qdisc(back)
    assert d["kind"] == "netem" and d["limit_packets"] == 77
    assert d["delay_ms"] == pytest.approx(1.5, abs=1e-3)
    assert d["jitter_ms"] == pytest.approx(0.25, abs=1e-3)
    assert d["loss_pct"] == pytest.approx(0.5, rel=1e-6)
    assert d["rate_mbit"] == pytest.approx(24) and d["overhead_bytes"] == 20


def test_cgroup2_writes(tmp_path) -> None:
    """The cgroup v2 code path, against a fake hierarchy (this kernel may lack cgroup2 cpu)."""
    root = tmp_path
    (root / "cgroup.subtree_control").write_text("memory")
    run = root / names.cgroup_name("abc123")
    (run / "md").mkdir(parents=True)
    (run / "cgroup.subtree_control").write_text("")
    sup = cpu.CpuSupport(True, "cgroup2", str(root), "fake", cgroup2_root=str(root),
                         cgroup2_cpu=True)
    g = cpu.create_group("abc123", "md", 0.5, support=sup)
    assert (run / "md" / "cpu.max").read_text() == "50000 100000"
    assert g.setting == "50000 100000"
    assert (run / "cgroup.subtree_control").read_text() == "+cpu"
    assert g.notes and "enabled +cpu" in g.notes[0]


# --------------------------------------------------------------------------- capabilities


@lab_only
def test_capabilities_report(caps) -> None:
    wanted = {"root", "netns", "veth", "netem", "tbf", "htb", "ifb", "u32", "mirred",
              "cgroup2_cpu", "cpu_cap", "sshd", "iperf3", "hostapd", "wpa_supplicant",
              "qemu-system-x86_64", "kvm"}
    got = {c.name for c in caps}
    assert wanted <= got
    for c in caps:
        assert c.detail
        if not c.available:
            assert c.fix, f"{c.name} unavailable without a fix hint"
    assert caps.has("netns") and caps.has("veth")
    assert caps.has("netem") or caps.has("tbf")
    # the probe namespace is gone
    assert not [n for n in netns.owned_namespaces() if n.endswith("-probe")]


# --------------------------------------------------------------------------- up / down


@lab_only
def test_up_down_leaves_nothing(caps) -> None:
    p = LabPlan.star(
        LinkShape(rate_mbit=24, queue_packets=50),
        sysctls={"net.ipv4.tcp_slow_start_after_idle": "0"},
    )
    p = LabPlan(p.run_id, tuple(
        HostPlan(h.name, h.role, cpu_fraction=0.3 if h.name == "md" else None,
                 sysctls={"net.ipv4.tcp_no_metrics_save": "1"} if h.name == "es" else ())
        for h in p.hosts), p.medium, sysctls=p.sysctls)
    with NamespaceLab(p) as lab:
        st = lab.state
        assert st is not None
        assert set(netns.owned_namespaces(p.run_id)) == {lab.namespace(h) for h in
                                                           ("ap", "md", "ext", "es")}
        assert lab.address("es") == "198.19.0.2"
        # sysctls recorded per namespace (and the ones we set, set)
        for h in ("md", "ext", "es", "ap"):
            rec = st.hosts[h].sysctls
            for key in ("net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_congestion_control",
                        "net.ipv4.tcp_no_metrics_save"):
                assert key in rec
            assert rec["net.ipv4.tcp_slow_start_after_idle"] == "0"
        assert st.hosts["es"].sysctls["net.ipv4.tcp_no_metrics_save"] == "1"
        assert st.hosts["ap"].sysctls["net.ipv4.ip_forward"] == "1"
        # offloads off on every veth end of the shaped path (and the ifb)
        n_if = 0
        for hs in st.hosts.values():
            for ifname, off in hs.offloads.items():
                n_if += 1
                assert (off["tso"], off["gso"], off["gro"]) == (False, False, False), (ifname, off)
        assert n_if >= 7  # 3 host ends + 3 router ends + the downlink ifb
        # the report is JSON-serialisable and names both directions
        d = json.loads(json.dumps(st.to_dict()))
        assert [r["label"] for r in d["shaping"]] == ["uplink", "downlink"]
        # cpu cap: group exists with the right quota (or the report says why not)
        if caps.has("cpu_cap"):
            g = lab.cpu_group("md")
            assert g and os.path.isdir(g)
            assert st.hosts["md"].cpu["quota_us"] == 30000
            # a busy loop under the cap gets about 30% of a core (bounded: 1.5 s)
            proc = lab.popen("md", [sys.executable, "-c", "import time\nt=time.time()\n"
                                    "while time.time()-t<1.5: pass"])
            _, status, ru = os.wait4(proc.pid, 0)  # bounded: the loop ends after 1.5 s
            proc.returncode = os.waitstatus_to_exitcode(status)
            assert proc.returncode == 0
            used = ru.ru_utime + ru.ru_stime
            print(f"cpu cap 0.3: busy loop used {used:.2f} s of CPU in 1.5 s")
            # the cap is the upper bound; the lower one only shows the loop ran (the machine
            # may be busy with other work)
            assert 0.05 < used < 1.5 * 0.3 * 1.5, used
        else:
            assert st.hosts["md"].cpu["applied"] is False
    assert leftovers(p.run_id) == {}
    lab.down()  # idempotent
    assert leftovers(p.run_id) == {}


@lab_only
@pytest.mark.parametrize("step", ["_create_links", "_disable_offloads", "_shape"])
def test_failure_mid_up_leaves_nothing(caps, monkeypatch, step) -> None:
    p = plan()

    def boom(self, *a, **k):
        raise RuntimeError(f"injected failure in {step}")

    if step == "_shape":
        # fail after the uplink is shaped: a half-made qdisc tree must go too
        real = NamespaceLab._shape

        def boom(self, *a, **k):  # noqa: F811
            real(self, *a, **k)
            raise RuntimeError("injected failure after shaping")

    monkeypatch.setattr(NamespaceLab, step, boom)
    lab = NamespaceLab(p, capabilities=caps)
    with pytest.raises(RuntimeError, match="injected"):
        lab.up()
    assert leftovers(p.run_id) == {}
    lab.down()
    assert leftovers(p.run_id) == {}


CHILD = textwrap.dedent(
    """
    import subprocess, sys, time
    from testbed.lab.plan import LabPlan, LinkShape
    from testbed.lab.namespace_lab import NamespaceLab
    p = LabPlan.star(LinkShape(rate_mbit=24, queue_packets=50))
    with NamespaceLab(p) as lab:
        sleeper = lab.popen("md", ["sleep", "60"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("UP", p.run_id, sleeper.pid, flush=True)
        time.sleep(60)
    """
)


def _start_child() -> tuple[subprocess.Popen, str, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=restore_sigint)
    try:
        line = read_until(proc, "UP ", 30)
        assert line is not None, "child did not bring the lab up"
        _, rid, pid = line.split()
        return proc, rid, int(pid)
    except BaseException:
        proc.terminate()  # SIGTERM: the child's lab tears itself down
        try:
            err = proc.communicate(timeout=15)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            err = proc.communicate()[1]
        raise AssertionError(f"child failed: {err[-2000:]!r}")


@lab_only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_tears_down(caps, sig) -> None:
    proc, rid, sleeper = _start_child()
    try:
        assert netns.owned_namespaces(rid)
        proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert leftovers(rid) == {}
    assert not procs.is_running(sleeper), "process inside the lab survived teardown"


@lab_only
def test_clean_after_sigkill_touches_only_owned(caps) -> None:
    # a namespace that looks similar but is not ours, with a process and a link inside
    foreign = f"tb-{names.new_run_id()}-notours"
    assert not names.is_owned_namespace(foreign)
    netns.create_namespace(foreign)
    keeper = None
    try:
        from pyroute2 import IPRoute

        with IPRoute(netns=foreign, flags=0) as ipr:
            ipr.link("add", ifname="keep0", kind="veth", peer="keep1")
        keeper = netns.popen_in_namespace(foreign, ["sleep", "60"])
        proc, rid, sleeper = _start_child()
        proc.kill()  # SIGKILL: no teardown at all
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
        assert netns.owned_namespaces(rid), "the killed run should have left its namespaces"
        assert not runs.run_owner_alive(rid)
        plan_dry = backends.clean(dry_run=True)
        assert any(rid in line for line in plan_dry)
        assert not any(foreign in line for line in plan_dry)
        assert netns.owned_namespaces(rid), "dry run removed something"
        # the global dry run above selected it; remove just this run for real (other people's
        # orphans on a shared machine are theirs to inspect)
        removed = backends.clean(run_id=rid)
        assert any(f"remove netns {names.namespace_name(rid, 'md')}" == line for line in removed)
        assert any(line.startswith(f"kill pid {sleeper} ") for line in removed), removed
        assert leftovers(rid) == {}
        assert not procs.is_running(sleeper)
        # the foreign namespace, its link and its process are untouched
        assert netns.namespace_exists(foreign)
        assert keeper.poll() is None
        with IPRoute(netns=foreign, flags=0) as ipr:
            assert ipr.link_lookup(ifname="keep0")
        assert not any(foreign in line for line in removed)
    finally:
        if keeper is not None:
            keeper.kill()
            keeper.wait(timeout=5)
        netns.remove_namespace(foreign)


@lab_only
def test_clean_removes_a_dead_runs_keys_and_work_folder_and_a_zombie_owner_is_dead(tmp_path) -> None:
    rid = names.new_run_id()
    owner = subprocess.Popen(["sleep", "0.2"])
    start = procs.starttime(owner.pid)
    assert start is not None
    deadline = time.monotonic() + 10
    while open(f"/proc/{owner.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the owner did not exit"
        time.sleep(0.05)
    try:
        # killed, not reaped yet: its /proc entry remains, but it no longer owns anything
        runs.write_record(rid, {"run_id": rid, "kind": "lab", "pid": owner.pid,
                                    "starttime": start})
        assert not runs.run_owner_alive(rid)
        keys = tmp_path / "results" / "private"
        keys.mkdir(parents=True)
        (keys / "id_ed25519").write_text("secret")
        runs.remember_private(rid, keys)
        os.makedirs(runs.host_workdir(rid))
        plan_dry = backends.clean(dry_run=True)
        assert f"remove {keys}" in plan_dry and f"remove {runs.host_workdir(rid)}" in plan_dry
        removed = backends.clean(run_id=rid)
        assert f"remove {keys}" in removed
        assert not keys.exists() and not os.path.exists(runs.host_workdir(rid))
        assert (tmp_path / "results").is_dir()  # only what the record named
        assert runs.read_run_record(rid) is None
    finally:
        owner.wait(timeout=5)
        runs.unregister_run(rid)


@lab_only
def test_clean_skips_live_runs(caps) -> None:
    with NamespaceLab(plan(), capabilities=caps) as lab:
        removed = backends.clean(dry_run=True)
        assert not any(lab.run_id in line for line in removed)
        assert backends.clean(run_id=lab.run_id, dry_run=True)  # it would, if asked by run id
        assert len(netns.owned_namespaces(lab.run_id)) == 4
        # a second lab with the same run id refuses to start and does not tear down the first
        twin = NamespaceLab(LabPlan.star(LinkShape(rate_mbit=5), run_id=lab.run_id),
                           capabilities=caps)
        with pytest.raises(LabError, match="in use"):
            twin.up()
        twin.down()
        assert len(netns.owned_namespaces(lab.run_id)) == 4


# --------------------------------------------------------------------------- shaping accuracy


@pytest.fixture(scope="module")
def shaped_lab(caps):
    if not shutil.which("iperf3"):
        pytest.skip("iperf3 not installed")
    # reno: a loss-based congestion control always allowed in namespaces
    p = plan(sysctls={"net.ipv4.tcp_congestion_control": "reno"})
    with NamespaceLab(p, capabilities=caps) as lab:
        yield lab
    assert leftovers(p.run_id) == {}


@lab_only
@needs_iperf3
def test_tbf_burst_is_small(shaped_lab, caps) -> None:
    reports = shaped_lab.reshape(LinkShape(rate_mbit=24, queue_packets=50))
    up = reports[0]
    tree = host_shaping.read_tree(shaped_lab.namespace("ap"), up.interface)
    if caps.has("netem"):
        q = next(q for q in tree["qdiscs"] if q["kind"] == "netem")
        assert q["rate_mbit"] == pytest.approx(24, rel=0.01)
        return
    tbf = next(q for q in tree["qdiscs"] if q["kind"] == "tbf")
    assert FRAME <= tbf["burst_bytes"] <= 2 * FRAME + 64, tbf
    assert tbf["max_packet_bytes"] >= FRAME, tbf  # full frames are not dropped
    assert tbf["rate_mbit"] == pytest.approx(24, rel=0.001)
    fifo = next(q for q in tree["qdiscs"] if q["kind"] == "pfifo")
    assert fifo["limit"] == 50
    assert up.applied["burst_bytes"] == tbf["burst_bytes"]
    assert up.expected["small_transfer_optimism_ms"] == pytest.approx(
        tbf["burst_bytes"] * 8 / 24e6 * 1e3, rel=0.01)
    # honest report: what netem would have done is declared not applied
    r = shaped_lab.reshape(LinkShape(rate_mbit=24, delay_ms=5, jitter_ms=1, loss_pct=0.1))[0]
    for key in ("delay_ms", "jitter_ms", "loss_pct"):
        assert r.not_applied[key].startswith("not applied")
    # per-station HTB: every class's bucket is small too
    r = shaped_lab.reshape(LinkShape(rate_mbit=24, fair_per_station=True))[0]
    assert r.backend.startswith("htb")
    assert len(r.applied["per_station_classes"]) == 2
    for c in r.classes:
        assert c["burst_bytes"] <= 2 * FRAME + 64 and c["cburst_bytes"] <= 2 * FRAME + 64, c


@lab_only
@needs_iperf3
@pytest.mark.parametrize("rate", [3, 24])
def test_tcp_goodput_matches_rate(shaped_lab, rate) -> None:
    lab = shaped_lab
    rep = lab.reshape(LinkShape(rate_mbit=rate, queue_packets=50))[0]
    expected = rep.expected["tcp_goodput_mbit"]
    assert expected == pytest.approx(rate * 1448 / 1514, rel=1e-3)
    srv = start_iperf_server(lab, "es", 5201)
    try:
        r = lab.run("md", ["iperf3", "-c", lab.address("es"), "-p", "5201", "-t", "3", "-O", "1",
                           "-J"], timeout=20)
    finally:
        stop(srv)
    got = tcp_goodput_mbit(iperf_json(r))
    print(f"TCP md->es at {rate} Mbit/s: {got:.3f} Mbit/s (expected {expected:.3f})")
    assert got == pytest.approx(expected, rel=0.10)


@lab_only
@needs_iperf3
def test_udp_load_achieved(shaped_lab) -> None:
    lab = shaped_lab
    lab.reshape(LinkShape(rate_mbit=24, queue_packets=50))
    srv = start_iperf_server(lab, "es", 5202)
    try:
        r = lab.run("ext", ["iperf3", "-c", lab.address("es"), "-p", "5202", "-u", "-b", "5M",
                            "-t", "3", "-J"], timeout=20)
    finally:
        stop(srv)
    got = udp_received_mbit(iperf_json(r))
    print(f"UDP ext->es -b 5M through 24 Mbit/s: {got:.3f} Mbit/s received")
    assert got == pytest.approx(5.0, rel=0.10)


@lab_only
@needs_iperf3
def test_fair_per_station_md_not_starved(shaped_lab) -> None:
    lab = shaped_lab
    rate = 10
    rep = lab.reshape(LinkShape(rate_mbit=rate, queue_packets=50, fair_per_station=True))[0]
    assert rep.backend.startswith("htb"), rep.backend
    s_udp = start_iperf_server(lab, "es", 5202)
    s_tcp = start_iperf_server(lab, "es", 5201)
    udp = None
    try:
        # ext saturates the medium (2x its rate) first; then md starts a TCP flow
        udp = lab.popen("ext", ["iperf3", "-c", lab.address("es"), "-p", "5202", "-u", "-b",
                                f"{2 * rate}M", "-t", "5", "-J", "--get-server-output"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)
        r = lab.run("md", ["iperf3", "-c", lab.address("es"), "-p", "5201", "-t", "3", "-J"],
                    timeout=20)
        out, _ = udp.communicate(timeout=20)
    finally:
        if udp is not None and udp.poll() is None:
            udp.kill()
            udp.communicate()
        stop(s_udp)
        stop(s_tcp)
    md = tcp_goodput_mbit(iperf_json(r))
    udp_data = iperf_json(out)
    # what ext got while md was active: the server's 1 s intervals within md's ~0.8..3.8 s
    text = udp_data.get("server_output_text", "")
    unit = {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}
    ivals = [float(m[3]) * unit[m[4]] for m in re.finditer(
        r"\]\s+([\d.]+)-([\d.]+)\s+sec\s+[\d.]+ \w?Bytes\s+([\d.]+) ([KMG]?)bits/sec", text)
        if float(m[1]) >= 0.99 and float(m[2]) <= 3.9]
    assert ivals, text
    ext = sum(ivals) / len(ivals)
    print(f"fair HTB {rate} Mbit/s: md TCP {md:.2f} Mbit/s while ext UDP (offered "
          f"{2 * rate}) received {ext:.2f}")
    assert md >= 0.30 * rate, md
    assert ext >= 0.30 * rate, ext  # and ext keeps its share too
    assert md + ext <= rate * 1.1  # one shared medium, not two


@lab_only
@needs_iperf3
def test_ingress_shaping_via_ifb(shaped_lab, caps) -> None:
    """Shape a direction at an interface's ingress: clsact + u32 match-all + mirred -> ifb."""
    lab = shaped_lab
    lab.reshape(LinkShape(rate_mbit=24, queue_packets=50))
    ns, es_if = lab.namespace("es"), lab.interface("es")
    ifb = names.ifb_name(lab.run_id, "in")
    host_shaping.add_ifb(ns, ifb)
    try:
        red = host_shaping.redirect_to_ifb(ns, es_if, ifb, hook="ingress")
        assert red["hook"] == "ingress"
        rep = host_shaping.apply_shape(ns, ifb, LinkShape(rate_mbit=3, queue_packets=50), caps,
                                  label="es-ingress", feeds=[es_if])
        srv = start_iperf_server(lab, "es", 5203)
        try:
            r = lab.run("md", ["iperf3", "-c", lab.address("es"), "-p", "5203", "-t", "3",
                               "-O", "1", "-J"], timeout=20)
        finally:
            stop(srv)
        got = tcp_goodput_mbit(iperf_json(r))
        print(f"TCP md->es, 24 Mbit/s medium, es ingress shaped to 3 Mbit/s: {got:.3f} "
              f"(expected {rep.expected['tcp_goodput_mbit']})")
        assert got == pytest.approx(rep.expected["tcp_goodput_mbit"], rel=0.10)
    finally:
        _remove_redirect(ns, es_if)
        netns.delete_link(ns, ifb)


def _remove_redirect(namespace: str, ifname: str) -> None:
    """Remove the clsact qdisc (and with it every redirect filter) from ``ifname``."""
    with netns.iproute(namespace) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        for m in ipr.tc("dump", index=index):
            if m.get_attr("TCA_KIND") == "clsact":
                ipr.tc("del", "clsact", index)
