"""Pre-flight checks (``testbed doctor``, ``testbed run``) and how a run ends before its first step.

The ``/``-is-not-a-mount-point case is made for real: a private mount namespace (``unshare
--mount --propagation private``, so every mount made here vanishes with its last process) holds a
plain directory whose subdirectories are bind mounts of this machine's ``/usr``, ``/etc``, ...,
and ``chroot`` into it: there ``/`` is not a mount point and ``ip netns exec`` fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import testbed
from testbed.lab import preflight
from testbed.lab.capabilities import Capabilities, Capability

NETNS_DIR = "/run/netns"
RUN_RECORDS = "/run/testbed"


def _why_not_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, mount namespaces, chroot)"
    for tool in ("ip", "unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (iproute2, util-linux, coreutils)"
    return None


needs_root = pytest.mark.skipif(_why_not_root() is not None, reason=_why_not_root() or "")

SCENARIO = """\
name: preflight-test
link: {{kind: wifi, preset: wifi-80211g{tcp}}}
hosts:
  - {{name: md, role: md}}
  - {{name: es, role: es}}
  - {{name: ap, role: ap, backend: namespace}}
sweep: {{loads_mbit: [0]}}
model: mobilenet_v2
configurations:
  - {{name: ec, mode: EC, model: mobilenet_v2}}
frames: {frames}
warmup: 1
"""


def _scenario(tmp_path: Path, *, frames: int = 2, tcp: str = "") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(frames=frames, tcp=tcp))
    return path


def _leftovers(run_id: str | None = None) -> set[str]:
    """The testbed's namespaces and run records (of ``run_id``), and processes naming it."""
    found = set()
    for folder, prefix in ((NETNS_DIR, "tb-"), (RUN_RECORDS, "")):
        try:
            found |= {f"{folder}/{n}" for n in os.listdir(folder)
                      if n.startswith(prefix) and (run_id is None or run_id in n)}
        except FileNotFoundError:
            pass
    if run_id is not None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if run_id in cmd:
                found.add(f"process {pid}: {cmd[:100]}")
    return found


def _manifest(results: Path) -> dict:
    runs = list(results.iterdir())
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "manifest.json").read_text())


# --------------------------------------------------------------------------------------------
# a chroot whose / is not a mount point
# --------------------------------------------------------------------------------------------
def _top(path: str) -> str:
    return "/" + Path(os.path.realpath(path)).parts[1]


def _in_chroot(root: Path, argv: list[str], *, self_bind: bool) -> subprocess.CompletedProcess:
    """Run ``argv`` chrooted into ``root``, a plain directory (``self_bind``: bind-mounted onto
    itself first, the documented fix), in a private mount namespace of its own."""
    project = Path(testbed.__file__).resolve().parents[1]
    binds = sorted({"/usr", "/etc", "/var", "/tmp", *(_top(p) for p in (
        sys.prefix, sys.base_prefix, sys.executable, str(project)))})
    script = ["set -e", f"mkdir -p {root}"]
    if self_bind:
        script.append(f"mount --bind {root} {root}")
    for d in binds:
        script.append(f"mkdir -p {root}{d} && mount --bind {d} {root}{d}")
    for d in ("/dev", "/proc", "/sys"):  # with their submounts (devpts, cgroups)
        script.append(f"mkdir -p {root}{d} && mount --rbind {d} {root}{d}")
    # a /run of its own: the check's namespace and run record stay inside this mount namespace
    script.append(f"mkdir -p {root}/run && mount -t tmpfs tmpfs {root}/run")
    for entry in os.listdir("/"):  # merged /usr: /bin -> usr/bin, /lib -> usr/lib, ...
        if os.path.islink(f"/{entry}") and not os.path.lexists(root / entry):
            script.append(f"ln -s {shlex.quote(os.readlink('/' + entry))} {root}/{entry}")
    script.append(f"cd {root} && exec chroot {root} {shlex.join(argv)}")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           "\n".join(script)], capture_output=True, text=True, timeout=180)


PROBE = ("import json; from testbed.lab import preflight; c = preflight.netns_exec(); "
         "print(json.dumps({'mount': preflight.root_is_mount_point(), **c.to_dict()}))")


@needs_root
def test_netns_exec_fails_where_root_is_not_a_mount_point_and_names_the_fix(tmp_path):
    proc = _in_chroot(tmp_path / "root", [sys.executable, "-c", PROBE], self_bind=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mount"] is False  # the situation under test: / is not a mount point
    assert result["available"] is False
    assert "mount --make-rslave /" in result["detail"]  # iproute2's own words, kept
    assert "/ is not a mount point" in result["detail"]
    assert result["fix"] == preflight.ROOT_NOT_A_MOUNT_FIX
    assert "mount --bind DIR DIR" in result["fix"]


@needs_root
def test_the_named_fix_works_a_chroot_bind_mounted_onto_itself(tmp_path):
    proc = _in_chroot(tmp_path / "root", [sys.executable, "-c", PROBE], self_bind=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mount"] is True
    assert result["available"] is True, result


@needs_root
def test_doctor_says_not_ready_and_prints_the_fix_in_that_chroot(tmp_path):
    proc = _in_chroot(tmp_path / "root", [sys.executable, "-m", "testbed", "doctor", "--results",
                                          str(tmp_path / "results")], self_bind=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.split()[:2] == ["--", "netns_exec"])
    assert lines[row + 1].split()[:1] == ["fix:"]
    assert preflight.ROOT_NOT_A_MOUNT_FIX in lines[row + 1]
    assert "NOT ready (fix netns_exec above)" in proc.stdout


@needs_root
def test_run_stopped_by_preflight_writes_a_failed_manifest_with_the_fix(tmp_path):
    scenario = _scenario(tmp_path)
    results = tmp_path / "results"
    proc = _in_chroot(tmp_path / "root", [sys.executable, "-m", "testbed", "run", str(scenario),
                                          "--results", str(results)], self_bind=False)
    assert proc.returncode == 2, proc.stderr
    assert f"fix: {preflight.ROOT_NOT_A_MOUNT_FIX}" in proc.stderr
    manifest = _manifest(results)
    assert manifest["status"] == "failed"
    assert manifest["failure"]["stage"] == "pre-flight"
    assert "netns_exec" in manifest["failure"]["reason"]
    assert manifest["failure"]["fix"] == preflight.ROOT_NOT_A_MOUNT_FIX
    assert manifest["scenario"]["name"] == "preflight-test" and manifest["steps"] == {}
    assert manifest["lab"]["backend"]["backend"] == "namespace"


# --------------------------------------------------------------------------------------------
# on this machine
# --------------------------------------------------------------------------------------------
@needs_root
def test_netns_exec_passes_here_and_leaves_nothing():
    check = preflight.netns_exec()
    assert check.available, check
    # made with the testbed's prefix (so `testbed clean` knows it), and removed
    run_id = re.search(r"tb-([0-9a-f]{6})-pf", check.detail).group(1)
    assert _leftovers(run_id) == set()


def test_results_dir_check(tmp_path):
    assert preflight.results_dir(tmp_path / "a" / "b").available
    (tmp_path / "file").write_text("")
    bad = preflight.results_dir(tmp_path / "file" / "results")
    assert not bad.available and "not a folder" in bad.detail and "--results" in bad.fix
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # the check created nothing


def test_which_checks_block_a_run():
    assert preflight.needed(emulated=False, backend=None, needs_load=True) == ["root"]
    ns = preflight.needed(emulated=True, backend="namespace", needs_load=False)
    assert "netns_exec" in ns and "sshd" in ns and "iperf3" not in ns and "tun" not in ns
    vm = preflight.needed(emulated=True, backend="vm", needs_load=True)
    assert {"iperf3", "qemu-system-x86_64", "tun"} <= set(vm)


def test_require_names_every_failed_check_and_its_fix():
    caps = Capabilities((Capability("root", True, "euid 0"),
                         Capability("sshd", False, "sshd not found",
                                    "apt-get install openssh-server"),
                         Capability("iperf3", False, "iperf3 not found", "apt-get install iperf3")))
    assert [c.name for c in preflight.require(caps, ["root"])] == ["root"]
    with pytest.raises(preflight.PreflightError) as info:
        preflight.require(caps, ["root", "sshd", "iperf3"])
    assert [c.name for c in info.value.failed] == ["sshd", "iperf3"]
    assert str(info.value) == "sshd: sshd not found; iperf3: iperf3 not found"
    assert info.value.fix == "apt-get install openssh-server; apt-get install iperf3"


@needs_root
def test_run_failing_at_lab_start_up_writes_a_failed_manifest(tmp_path):
    # a real start-up failure: a congestion control the kernel does not have
    scenario = _scenario(tmp_path, tcp=", tcp: {congestion_control: nosuchcc}")
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                           str(results)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    manifest = _manifest(results)
    assert manifest["status"] == "failed"
    assert manifest["failure"]["stage"] == "lab start-up"
    assert "tcp_congestion_control=nosuchcc" in manifest["failure"]["reason"]
    assert manifest["run_id"] and manifest["versions"]["testbed"] == testbed.__version__
    assert _leftovers(manifest["run_id"]) == set()


def _ignoring_sigint() -> None:
    """``preexec_fn``: what a shell's background job gets, SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _sigint_ignored(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGINT - 1)))


@needs_root
def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path):
    scenario = _scenario(tmp_path, frames=400)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                             str(results)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_ignoring_sigint)
    try:
        deadline = time.monotonic() + 120
        manifest: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:  # until the lab is up
            path = next(results.glob("*/manifest.json"), None) if results.exists() else None
            if path is not None:
                manifest = json.loads(path.read_text())
                if manifest.get("status") == "running":
                    break
            time.sleep(0.3)
        if manifest.get("status") != "running":
            proc.kill()
            pytest.fail(f"the lab did not come up in 120 s: {proc.communicate()[1][-2000:]}")
        assert not _sigint_ignored(proc.pid), "the run kept the inherited SIG_IGN"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "testbed run --resume" in err
    manifest = _manifest(results)
    assert manifest["status"] == "interrupted"
    assert _leftovers(manifest["run_id"]) == set()
