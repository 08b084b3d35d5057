"""testbed.lab.backends: every registry entry builds a lab with the shared lifecycle; the auto
choice weighs every backend by its measured fidelity (testbed.lab.fidelity) and says why, ns-3
included; a bad name is refused with the choices; clean() composes backends."""

from __future__ import annotations

import shutil

import pytest

from testbed import ns3_settings
from testbed.lab import backends, fidelity, names
from testbed.lab.base import LabBase, LabSetup
from testbed.lab.plan import LabPlan, LinkShape


class _Caps:
    def __init__(self, **have: bool) -> None:
        self.have = have

    def has(self, name: str) -> bool:
        return self.have.get(name, False)

    def get(self, name: str):
        return self.have.get(name)


def test_every_backend_builds_a_lab_with_the_shared_lifecycle(tmp_path) -> None:
    plan = LabPlan.star(LinkShape(rate_mbit=10))
    for name, backend in backends.BACKENDS.items():
        lab = backend.make_lab(plan, LabSetup(run_dir=tmp_path, capabilities=_Caps()))
        assert isinstance(lab, LabBase), name
        assert lab.state is None and lab.run_id == plan.run_id
        assert lab.address("md") == "198.18.1.2"
        lab.down()  # never up: a no-op, nothing of the run id is touched


def test_a_backend_name_not_in_the_registry_is_refused() -> None:
    with pytest.raises(ValueError,
                       match=r"auto or one of \['namespace', 'ns3', 'vm'\], got 'mininet'"):
        backends.choose("mininet", _Caps(netem=True))


@pytest.mark.root
def test_clean_of_a_run_that_left_nothing_removes_nothing(needs_root) -> None:
    run_id = names.new_run_id()
    assert backends.clean(dry_run=True, run_id=run_id) == []
    assert backends.clean(run_id=run_id) == []


# ---------------------------------------------------------------- auto: by measured fidelity

NS3_TEXT = "ns3 (ns-3 3.44.post0 simulating the cell in real time)"
NS3_FIGURE = (f"idle transfers within {100 * fidelity.NS3_WIFI.error:.0f} % of the expected DCF "
              f"floor")


def _auto(monkeypatch, *, qemu: bool, ns3: bool, link_kind: str = "wifi", **caps: bool) -> dict:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name if qemu else None)
    monkeypatch.setattr(ns3_settings, "ns3_available", lambda: ns3)
    return backends.choose("auto", _Caps(**caps), link_kind)


def test_auto_on_this_machine_kind_picks_the_vm_and_says_why_not_ns3(monkeypatch) -> None:
    c = _auto(monkeypatch, qemu=True, ns3=True, netem=False)
    assert c["backend"] == "vm" and c["warnings"] == [] and c["accel"] == "tcg"
    reason = c["reason"]
    assert reason.startswith("auto: vm (real netem in the AP VM, /usr/bin/qemu-system-x86_64 "
                             "(TCG)): idle transfers within 1 % of the netem floor")
    assert f"{NS3_TEXT}: available, {NS3_FIGURE}" in reason
    assert reason.split(NS3_TEXT)[1].split("; not chosen: ")[1].startswith(
        ("less faithful than vm", "no more faithful than vm (within 5 points), which costs less"))
    assert "namespace (no sch_netem in the host kernel: tbf/htb" in reason
    assert "not chosen: less faithful than vm" in reason


def test_auto_takes_ns3_over_tbf_where_there_is_neither_netem_nor_qemu(monkeypatch) -> None:
    c = _auto(monkeypatch, qemu=False, ns3=True, netem=False)
    assert c["backend"] == "ns3" and c["warnings"] == [] and c["accel"] is None
    assert c["reason"].startswith(f"auto: {NS3_TEXT}: {NS3_FIGURE}")
    assert "vm: not available here: no qemu-system-x86_64" in c["reason"]
    # its LTE cell measured against its own transport-block floor: ns-3 on an LTE link too
    c = _auto(monkeypatch, qemu=False, ns3=True, netem=False, link_kind="lte")
    assert c["backend"] == "ns3" and c["warnings"] == []
    assert c["reason"].startswith(f"auto: {NS3_TEXT}: idle transfers within 0 % of the "
                                  f"transport-block floor")
    # where the VM can run, its netem is as faithful (within 5 points) and cheaper
    c = _auto(monkeypatch, qemu=True, ns3=True, netem=False, link_kind="lte")
    assert c["backend"] == "vm"
    assert (f"{NS3_TEXT}: available, idle transfers within 0 % of the transport-block floor "
            f"(worst ") in c["reason"]
    assert "no more faithful than vm (within 5 points), which costs less" in c["reason"]
    # ns-3 simulates WiFi and LTE cells: nothing measured for a wired link, so tbf and its warning
    c = _auto(monkeypatch, qemu=False, ns3=True, netem=False, link_kind="wired")
    assert c["backend"] == "namespace" and c["warnings"] == [backends.NO_NETEM_WARNING]
    assert f"{NS3_TEXT}: available, no measured fidelity for this link" in c["reason"]


def test_auto_without_ns3_says_it_is_not_installed(monkeypatch) -> None:
    c = _auto(monkeypatch, qemu=False, ns3=False, netem=False)
    assert c["backend"] == "namespace" and c["warnings"] == [backends.NO_NETEM_WARNING]
    assert "ns3: not available here: ns-3 is not installed in this Python" in c["reason"]
    c = _auto(monkeypatch, qemu=True, ns3=True, netem=True)
    assert c["backend"] == "namespace" and c["warnings"] == []
    assert c["reason"].startswith("auto: namespace (the host kernel has sch_netem")


def test_a_more_faithful_ns3_wins_over_the_vm(monkeypatch) -> None:
    sloppy = fidelity.IdleFidelity("netem", "the netem floor", {"10,092 B": 1.3}, "a test")
    monkeypatch.setattr(backends, "NETEM", sloppy)
    c = _auto(monkeypatch, qemu=True, ns3=True, netem=False)
    assert c["backend"] == "ns3"
    assert ("vm (real netem in the AP VM, /usr/bin/qemu-system-x86_64 (TCG)): available, idle "
            "transfers within 30 % of the netem floor (worst 10,092 B: 1.30); not chosen: less "
            "faithful than ns3") in c["reason"]


def test_idle_fidelity_error_and_tie() -> None:
    a = fidelity.IdleFidelity("a", "its floor", {"x": 0.97, "y": 1.02}, "bench a")
    b = fidelity.IdleFidelity("b", "its floor", {"x": 1.0}, "bench b")
    assert a.error == pytest.approx(0.03) and b.error == 0.0
    assert fidelity.TIE > 0.03  # a tie: the first (cheaper) wins
    pair = [fidelity.Candidate("a", "A", None, a), fidelity.Candidate("b", "B", None, b)]
    assert fidelity.choose_auto(pair).backend == "a"
    far = fidelity.IdleFidelity("a", "its floor", {"x": 0.9}, "bench a")
    pair[0] = fidelity.Candidate("a", "A", None, far)
    assert fidelity.choose_auto(pair).backend == "b"
    with pytest.raises(ValueError, match="no backend can run here"):
        fidelity.choose_auto([fidelity.Candidate("a", "A", "missing", a)])
