"""The emulated lab with the AP as a QEMU VM (issue 7): backend choice, and one `testbed run`.

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
import subprocess
import sys
import time

import pytest

from testbed.emulated import NO_NETEM_WARNING, choose_backend
from testbed.lab import cleanup


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
    c = choose_backend("auto", _Caps(netem=False))
    assert c["backend"] == "namespace" and c["warnings"] == [NO_NETEM_WARNING]
    assert "delay, jitter and loss are NOT applied" in NO_NETEM_WARNING
    # explicit choices are kept, with the same warning when they cost fidelity
    assert choose_backend("vm", _Caps(netem=True))["backend"] == "vm"
    c = choose_backend("namespace", _Caps(netem=False))
    assert c["backend"] == "namespace" and c["warnings"] == [NO_NETEM_WARNING]


def test_fair_medium_is_htb_with_netem_leaves():
    from testbed.lab.shaping import StationClass
    from testbed.lab.topology import LinkShape
    from testbed.vm import lab

    ran = []

    class FakeVm:
        def run(self, argv, timeout=30, check=True):
            ran.append(argv if isinstance(argv, str) else " ".join(argv))

    report = lab.VmShapingReport("uplink", "vm", "eth3", "htb+netem", ["eth3"], {})
    shape = LinkShape(rate_mbit=3, delay_ms=12, queue_packets=128, fair_per_station=True)
    cmds, optimism = lab._apply_fair(FakeVm(), "eth3", shape,
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
  - {name: ap, role: ap, backend: vm}
  - {name: ext, role: ext}
sweep: {loads_mbit: [0, 4], settle_s: 0.5}
model: mobilenet_v2
configurations: [es-only]
frames: 3
warmup: 1
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, taps, QEMU)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
    for tool in ("apt-get", "dpkg", "modinfo", "depmod", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (the VM image build needs apt, dpkg, kmod, coreutils)"
    return None


@pytest.mark.root
@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_testbed_run_with_the_ap_as_a_vm(tmp_path):
    from testbed.vm import boot

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
    # WiFi mode (the default for a WiFi link in the VM): both stations associated over hwsim
    # radios with WPA2, the downlink queue is the AP radio's, every step saw 802.11 traffic
    wifi = lab["vm"]["wifi"]
    assert wifi["mode"] == "hwsim" and lab["backend"]["hwsim"] is True
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
    # nothing left: QEMU, taps, namespaces, records
    run_id = manifest["run_id"]
    assert not [p for p in os.listdir("/proc") if p.isdigit()
                and boot._is_our_qemu(int(p), run_id) and cleanup._alive(int(p))]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"tb{run_id}-" not in links
    assert cleanup.owned_namespaces(run_id) == []
    assert not boot.pid_file(run_id).exists() and not boot.record_file(run_id).exists()
    assert cleanup.read_run_record(run_id) is None
    assert not (run_dir / "vm" / "keys").exists() and not (run_dir / "private").exists()
