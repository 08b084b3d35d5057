"""The emulated lab with the AP as a QEMU VM: backend choice, and one `testbed run`.

The unit tests run anywhere. The end-to-end test runs ``testbed run`` on a tiny scenario with
``backend: vm`` (mobilenet_v2, es-only, loads 0 and 4 Mbit/s, 3 frames + 1 warm-up): it must
complete, its manifest must say that netem was applied inside the VM (read back with ``tc``),
and nothing of the run (QEMU, taps, namespaces, VM records) may be left. It needs root, QEMU
and the VM image's build tools; about 1-3 minutes depending on the machine's load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.lab.backends import NO_NETEM_WARNING
from testbed.lab.backends import choose as choose_backend
from testbed.lab import backends, netns, procs, runs

from tests.childproc import restore_sigint
from tests.vmcheck import needs_vm


class _Caps:
    def __init__(self, **have):
        self.have = have

    def has(self, name):
        return bool(self.have.get(name))

    def get(self, name):
        return object() if name in self.have else None


def test_auto_prefers_host_netem_then_the_vm_then_tbf(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    c = choose_backend("auto", _Caps(netem=True, kvm=False))
    assert (c["backend"], c["warnings"]) == ("namespace", [])
    assert "sch_netem" in c["reason"]
    c = choose_backend("auto", _Caps(netem=False, kvm=False))
    assert (c["backend"], c["accel"]) == ("vm", "tcg") and "TCG" in c["reason"]
    assert choose_backend("auto", _Caps(netem=False, kvm=True))["accel"] == "kvm"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(backends.ns3_settings, "ns3_available", lambda: False)  # else: ns-3
    c = choose_backend("auto", _Caps(netem=False))
    assert c["backend"] == "namespace" and c["warnings"] == [NO_NETEM_WARNING]
    assert "delay, jitter and loss are NOT applied" in NO_NETEM_WARNING
    # explicit choices are kept, with the same warning when they cost fidelity
    assert choose_backend("vm", _Caps(netem=True))["backend"] == "vm"
    c = choose_backend("namespace", _Caps(netem=False))
    assert c["backend"] == "namespace" and c["warnings"] == [NO_NETEM_WARNING]


def test_fair_medium_is_htb_with_netem_leaves():
    from testbed.lab.plan import LinkShape, StationClass
    from testbed.vm import medium

    ran = []

    class FakeVm:
        def run(self, argv, timeout=30, check=True):
            ran.append(argv if isinstance(argv, str) else " ".join(argv))

    report = medium.VmShapingReport("uplink", "vm", "eth3", "htb+netem", ["eth3"], {})
    shape = LinkShape(rate_mbit=3, delay_ms=12, queue_packets=128, fair_per_station=True)
    cmds, optimism = medium._apply_fair(FakeVm(), "eth3", shape,
                                     [StationClass("md", "198.18.1.0/24"),
                                      StationClass("ext", "198.18.2.0/24")], "src", report)
    text = "\n".join(ran)
    assert "classid 1:10 htb rate 1500000bit ceil 3000000bit" in text
    assert "parent 1:10 handle 10: netem limit 128 delay 12000us" in text
    assert "u32 match ip src 198.18.2.0/24 flowid 1:11" in text
    assert "rate" not in text.split("handle 10: netem")[1].splitlines()[0]  # rate is HTB's
    assert optimism > 1514 and report.applied["queue_limit_scope"] == "per class"


# --------------------------------------------------------------------------- end to end

SCENARIO = """\
name: vm-lab-test
link: {kind: wifi, preset: wifi-80211g}
hosts:
  - {name: md, role: md}
  - {name: es, role: es}
  - {name: ap, role: ap, backend: vm, hwsim: true}
  - {name: ext, role: ext}
sweep: {loads_mbit: [0, 4], settle_s: 0.5}
model: mobilenet_v2
configurations: [es-only]
frames: 3
warmup: 1
"""


def _namespace_ids(run_id: str) -> set[tuple[int, int]]:
    """(device, inode) of each of the run's network namespaces, read while they exist."""
    ids = set()
    for ns in netns.owned_namespaces(run_id):
        try:
            st = os.stat(netns.netns_path(ns))
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return ids


def _leftovers(run_id: str, run_dir: Path, namespace_ids: set[tuple[int, int]] = frozenset()) -> list[str]:
    """What of run ``run_id`` is still on this machine.

    Processes: QEMU, sshd, head, tail and their wrappers by command line (the VM's pid file,
    ``testbed-ap-<run>``, ``/tmp/testbed-<run>``, ``--run-id <run>``, the result folder), and any
    process (iperf3, tail...) still in one of ``namespace_ids`` (its namespaces, even after their
    names are gone). Then interfaces ``tb<run>-*`` (taps, veths, ifbs), namespaces
    ``tb-<run>-*``, cgroups ``testbed-<run>``, the VM's pid and record files, the run record.
    """
    from testbed.lab import cpu
    from testbed.vm import boot

    marks = [f"testbed-{run_id}", f"testbed-ap-{run_id}", str(boot.pid_file(run_id)),
             f"--run-id\0{run_id}", str(run_dir)]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid() or not procs.is_running(int(entry)):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in namespace_ids or any(m in cmdline for m in marks):
            found.append(f"process {entry}: {cmdline.replace(chr(0), ' ')[:150]}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
              if f"tb{run_id}-" in line]
    found += [f"namespace {ns}" for ns in netns.owned_namespaces(run_id)]
    found += [f"cgroup {d}" for d in cpu.owned_run_dirs(run_id)]
    found += [f"file {p}" for p in (boot.pid_file(run_id), boot.record_file(run_id)) if p.exists()]
    if runs.read_run_record(run_id) is not None:
        found.append(f"run record of {run_id}")
    # per-run keys never stay in the result folder; the hosts' work folder goes too
    found += [f"secret {p}" for p in (run_dir / "private", run_dir / "vm" / "keys",
                                       run_dir / "vm" / "initrd-run.img") if p.exists()]
    if os.path.exists(runs.host_workdir(run_id)):
        found.append(f"work folder {runs.host_workdir(run_id)}")
    return found


@pytest.mark.root
@needs_vm
def test_testbed_run_with_the_ap_as_a_vm(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    print(f"\ntestbed run with the AP as a VM: {wall:.0f} s, load average {os.getloadavg()}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "results").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert all(s["status"] == "ok" for s in manifest["steps"].values()), manifest["steps"]
    lab = manifest["lab"]
    assert lab["backend"]["backend"] == "vm" and lab["vm"]["image"]["sha256"]["initrd.img"]
    assert lab["vm"]["kernel_in_vm"] == lab["vm"]["image"]["kernel_version"]
    shaped = {s["label"]: s for s in lab["shaping"]}
    assert set(shaped) == {"uplink", "downlink"}
    for s in shaped.values():
        assert s["namespace"] == "vm" and s["backend"] == "netem" and not s["not_applied"]
        netem = [q for q in s["qdiscs"] if q["kind"] == "netem"]
        assert netem and netem[0]["options"]["limit"] == 100
        assert "netem" in s["vm"]["tc_s_qdisc"] and "rate 24Mbit" in s["vm"]["tc_s_qdisc"]
    # WiFi mode (hwsim: true): both stations associated over hwsim radios with WPA2, the
    # downlink queue is the AP radio's, every step saw 802.11 traffic, the unshaped 802.11
    # path was measured against the medium's rate
    wifi = lab["vm"]["wifi"]
    assert wifi["mode"] == "hwsim" and lab["backend"]["hwsim"] is True
    assert wifi["path_capacity"]["tcp_goodput_mbit"] > 0 and wifi["ccmp_cipher_driver"]
    assert "AP-ENABLED" in wifi["events"]["ap"]["AP-ENABLED"]["line"]
    for station in ("md", "ext"):
        assert "CTRL-EVENT-CONNECTED" in wifi["events"][station]["CTRL-EVENT-CONNECTED"]["line"]
    assert shaped["downlink"]["interface"] == wifi["ap_radio"]["ifname"]
    assert any("no airtime model" in n for n in lab["notes"])
    for step in manifest["steps"].values():
        assert "qemu_cpu_s" in step["conditions"]
        radio = step["conditions"]["radio"]
        assert radio["md"]["connected"] and radio["ap"]["stations"]["md"]["rx_bytes"] > 0
    kept = {p.name for p in (run_dir / "vm" / "wifi").iterdir()}
    assert {"hostapd.conf", "hostapd.log", "wpa_supplicant-md.log"} <= kept
    assert "wpa_passphrase=<per-run secret>" in (run_dir / "vm" / "wifi" / "hostapd.conf").read_text()
    # nothing left: QEMU, taps, namespaces, records, per-run keys
    assert _leftovers(manifest["run_id"], run_dir) == []
    assert not (run_dir / "vm" / "keys").exists() and not (run_dir / "private").exists()


# --------------------------------------------------------------------------- interrupted runs

# steps of 13 frames captured at 2 Hz at the most: at least 6 s, long enough to be interrupted
# while frames flow on an idle machine too, short enough for a test on a loaded one
SLOW_SCENARIO = SCENARIO.replace("frames: 3\n", "frames: 12\ncapture_rate_hz: 2\n")
FRAMES = 13  # + 1 warm-up
FIRST, SECOND = "L0-r0-es-only", "L4-r0-es-only"


class _BackgroundRun:
    """``testbed run`` of ``scenario`` in its own session (as from a shell), output to files.

    As a context manager: whatever happens in the test, the run is stopped (SIGINT to its group,
    then SIGKILL) and, if anything of it is left, cleaned by its run id only (other runs on this
    machine are not the test's).
    """

    def __init__(self, tmp_path: Path, scenario: str = SLOW_SCENARIO):
        self.tmp_path = tmp_path
        self.results = tmp_path / "results"
        self.scenario = tmp_path / "s.yaml"
        self.scenario.write_text(scenario)
        self.run_id: str | None = None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "_BackgroundRun":
        with open(self.tmp_path / "run.out", "wb") as out, open(self.tmp_path / "run.err", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "testbed", "run", str(self.scenario), "--results",
                 str(self.results)], stdout=out, stderr=err, start_new_session=True,
                preexec_fn=restore_sigint)
        return self

    def __exit__(self, *exc) -> None:
        self.find_run_id()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self.run_id and _leftovers(self.run_id, self.results):
            backends.clean(run_id=self.run_id)

    @property
    def run_dir(self) -> Path | None:
        return next((m.parent for m in self.results.glob("*/manifest.json")), None)

    def find_run_id(self) -> str | None:
        """From the result folder's manifest, else from the VM lab's run record this very process
        owns (pid and start time: a stale record may carry a reused pid)."""
        if self.run_id is None and self.run_dir is not None:
            try:
                self.run_id = json.loads((self.run_dir / "manifest.json").read_text())["run_id"]
            except (OSError, ValueError, KeyError):
                pass
        if self.run_id is None:
            me = (self.proc.pid, procs.starttime(self.proc.pid))
            for run in runs.recorded_runs():
                rec = runs.read_run_record(run) or {}
                # the same process also owns short-lived records, e.g. the capability probe's
                if (rec.get("pid"), rec.get("starttime")) == me and rec.get("kind") == "vm-lab":
                    self.run_id = run
        return self.run_id

    def err_tail(self) -> str:
        try:
            return (self.tmp_path / "run.err").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_until(self, what: str, cond, timeout: float):
        """Poll ``cond()`` until it is truthy (its value is returned); fail on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            got = cond()
            if got:
                return got
            if self.proc.poll() is not None:
                pytest.fail(f"testbed run exited (rc {self.proc.returncode}) before {what}:\n"
                            f"{self.err_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:g} s (run {self.run_id}):\n{self.err_tail()}")
            time.sleep(0.5)

    def frames_written(self, step: str) -> bool:
        """Frames of ``step`` are being recorded on the MD (header + at least one row)."""
        try:
            text = Path(f"/tmp/testbed-{self.run_id}/{step}.csv").read_text()
        except OSError:
            return False
        return len(text.splitlines()) >= 2


def _pids_of(run_id: str) -> set[int]:
    """Processes in the run's namespaces and its QEMU."""
    from testbed.vm import boot

    pids = {p for ns in netns.owned_namespaces(run_id) for p in netns.pids_in_namespace(ns)}
    return pids | {q for q in [boot._read_record(run_id).get("qemu_pid")] if q}


def _killed_pid(line: str) -> int | None:
    """The pid of a ``testbed clean`` line ``... kill pid N (comm)``, else None."""
    words = line.split()
    return int(words[words.index("pid") + 1]) if "kill pid" in line else None


def _names_run(line: str, run_id: str) -> bool:
    """A ``testbed clean`` line names an object of run ``run_id`` (namespace, interface, cgroup,
    VM, VM files, run record, a process found in one of its namespaces)."""
    return any(f in line for f in (f"tb-{run_id}-", f"tb{run_id}-", f"testbed-{run_id}",
                                   f"run {run_id}", f"vm-{run_id}.", f"/{run_id}.json"))


def _live_runs(but: str) -> dict[str, dict]:
    """Other runs on this machine whose owner is alive: their run and VM records."""
    from testbed.vm import boot

    return {r: {"run": runs.read_run_record(r), "vm": boot._read_record(r)}
            for r in runs.recorded_runs() if r != but and runs.run_owner_alive(r)}


def _comms(pids) -> set[str]:
    return {procs.comm(p) for p in pids}


@pytest.mark.root
@needs_vm
def test_ctrl_c_mid_step_with_the_ap_as_a_vm_tears_everything_down(tmp_path):
    t0 = time.monotonic()
    with _BackgroundRun(tmp_path) as run:
        run_dir = run.wait_until("manifest", lambda: run.run_dir, 300)
        run_id = run.find_run_id()
        namespace_ids = _namespace_ids(run_id)
        assert len(namespace_ids) == 3  # md, es, ext (the AP is the VM)
        # the first step finished (its records fetched) and frames of the second are flowing
        run.wait_until(f"records of {FIRST}", lambda: (run_dir / "steps" / f"{FIRST}.csv").exists(), 240)
        run.wait_until(f"frames of {SECOND}", lambda: run.frames_written(SECOND), 120)
        running = _comms(_pids_of(run_id))
        assert {"sshd", "iperf3", "qemu-system-x86"} <= running, running
        t_sig = time.monotonic()
        os.killpg(run.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the foreground group
        run.proc.wait(timeout=150)
        teardown = time.monotonic() - t_sig
    err = run.err_tail()
    print(f"\nCtrl-C with the AP as a VM: {time.monotonic() - t0:.0f} s, teardown {teardown:.1f} s, "
          f"load average {os.getloadavg()}")
    assert run.proc.returncode == 130, err
    assert f"testbed run --resume {run_dir}" in err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest.get("finished")
    steps = manifest["steps"]
    assert steps[FIRST]["status"] == "ok" and steps[FIRST]["frames"] == FRAMES, steps
    assert steps[SECOND]["status"] == "interrupted", steps
    # the measured step is kept: its raw records and its rows in frames.csv, nothing of the other
    from testbed.records import read_records

    assert len(list(read_records(run_dir / "steps" / f"{FIRST}.csv"))) == FRAMES
    rows = list(read_records(run_dir / "frames.csv"))
    assert len(rows) == FRAMES and {r.step for r in rows} == {FIRST}
    assert not (run_dir / "steps" / f"{SECOND}.csv").exists()
    assert (run_dir / "vm" / "wifi" / "hostapd.log").exists()  # fetched from the VM on the way down
    assert _leftovers(run_id, run_dir, namespace_ids) == []
    assert not (run_dir / "vm" / "keys").exists() and not (run_dir / "private").exists()


@pytest.mark.root
@needs_vm
def test_sigkill_mid_step_with_the_ap_as_a_vm_then_testbed_clean(tmp_path):
    from testbed.vm import boot

    t0 = time.monotonic()
    # one step, with competing load: iperf3 runs when the run is killed
    with _BackgroundRun(tmp_path, SLOW_SCENARIO.replace("[0, 4]", "[4]")) as run:
        run_id = run.wait_until("run record", run.find_run_id, 60)
        run.wait_until(f"frames of {SECOND}", lambda: run.frames_written(SECOND), 300)
        run_dir = run.run_dir
        namespace_ids = _namespace_ids(run_id)
        qemu = boot._read_record(run_id)["qemu_pid"]
        assert boot._is_our_qemu(qemu, run_id) and procs.is_running(qemu)
        running = _comms(_pids_of(run_id))
        assert {"sshd", "iperf3"} <= running, running
        others = _live_runs(but=run_id)
        run.proc.kill()  # SIGKILL to the run's process only (as the OOM killer would): no teardown
        run.proc.wait(timeout=30)  # reaped: a zombie owner would still look alive to `testbed clean`
        left = _leftovers(run_id, run_dir, namespace_ids)
        assert any(f"testbed-ap-{run_id}" in x for x in left) and procs.is_running(qemu), left
        assert netns.owned_namespaces(run_id) and runs.read_run_record(run_id), left
        assert not runs.run_owner_alive(run_id)
        # `testbed clean` (no --all) removes only runs whose owner is gone. Check first that here
        # that is this run alone: every object it would remove names the run, every pid it would
        # kill is QEMU or lives in the run's namespaces; nothing of a live run is listed.
        ours = _pids_of(run_id) | {qemu}
        theirs = set().union(*(_pids_of(r) for r in others))
        dry = subprocess.run([sys.executable, "-m", "testbed", "clean", "--dry-run"],
                             capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0, dry.stderr
        plan = [line for line in dry.stdout.splitlines() if line.startswith("would remove ")]
        assert plan and not [line for line in plan if _killed_pid(line) in theirs
                             or any(_names_run(line, r) for r in others)], dry.stdout
        foreign = [line for line in plan if not (_names_run(line, run_id) or str(run_dir) in line)
                   and _killed_pid(line) not in ours]
        # other killed runs' leftovers on this machine are theirs to inspect: a bare `testbed
        # clean` would remove them too, so this run is then cleaned by its id
        argv = [sys.executable, "-m", "testbed", "clean"] + (["--run-id", run_id] if foreign else [])
        clean = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    print(f"\nSIGKILL + testbed clean with the AP as a VM: {time.monotonic() - t0:.0f} s, "
          f"load average {os.getloadavg()}")
    assert clean.returncode == 0, clean.stderr
    assert f"removed stop VM of run {run_id} (qemu pid {qemu})" in clean.stdout, clean.stdout
    # `testbed clean` returns only once every process it stopped has exited (every thread: a
    # QEMU whose main thread is gone still holds its taps while its vCPU threads wind down)
    assert not [p for p in ours if procs.is_running(p)], clean.stdout
    assert _leftovers(run_id, run_dir, namespace_ids) == [], clean.stdout
    # the other live runs (the sweep next door) are untouched
    for r, before in others.items():
        if runs.run_owner_alive(r):
            assert runs.read_run_record(r) == before["run"], r
            if before["vm"].get("qemu_pid") and boot._read_record(r):
                assert procs.is_running(before["vm"]["qemu_pid"]), r
