"""The access point as a QEMU VM: image build, boot, pinned SSH, netem fidelity, teardown.

Unit tests run anywhere. The ``root`` tests build the image (from the apt cache in
/var/cache/testbed/debs; about 80 MB from Debian's mirror the first time), boot ONE VM for the
whole module between two namespaces made for the test, and only send traffic between those
namespaces and the VM.
"""

from __future__ import annotations

import base64
import io
import os
import select
import socket
import statistics
import subprocess
import time

import pytest

from testbed.lab import backends, cleanup, names, netns
from testbed.vm import boot, shaping
from testbed.vm.build import cache_key
from testbed.vm.packages import _dep_names, _is_library
from testbed.vm.cpio import CpioWriter
from testbed.vm.shaping import Netem

from tests.vmcheck import assert_nothing_left, needs_vm, owned_links, qemu_pids


# --------------------------------------------------------------------------- unit


def test_netem_args():
    spec = Netem(rate_mbit=24, delay_ms=2, jitter_ms=1.5, distribution="normal", loss_pct=1,
                 limit_packets=50)
    assert spec.tc_args() == ["netem", "limit", "50", "delay", "2000us", "1500us", "distribution",
                              "normal", "loss", "random", "1%", "rate", "24000kbit"]
    assert Netem(rate_mbit=3).tc_args() == ["netem", "limit", "1000", "rate", "3000kbit"]
    assert Netem(rate_mbit=0.5, slot_ms=(1, 4)).tc_args()[-3:] == ["slot", "1000us", "4000us"]
    for bad in (dict(rate_mbit=0), dict(loss_pct=101), dict(delay_ms=-1), dict(distribution="x")):
        with pytest.raises(ValueError):
            Netem(**bad)


def test_floors_count_headers():
    floor, floor_hdr = shaping.floors(10_092, 24, 0.002)
    assert floor == pytest.approx(10_096 * 8 / 24e6 + 0.002)
    assert floor_hdr == pytest.approx((10_096 + 7 * 66) * 8 / 24e6 + 0.002)


def test_depends_parsing():
    field = "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, libssl3:any, zlib1g (>= 1:1.1.4)"
    assert _dep_names(field) == ["libc6", "debconf", "libssl3", "zlib1g"]
    assert _is_library("libtomcrypt1") and _is_library("zlib1g")
    assert not _is_library("libcap2-bin") and not _is_library("adduser")


def test_cache_key_follows_versions():
    a = cache_key({"busybox-static": "1", "linux-image-x": "2"})
    assert a == cache_key({"linux-image-x": "2", "busybox-static": "1"})
    assert a != cache_key({"busybox-static": "1", "linux-image-x": "3"})


def _parse_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += (4 - pos % 4) % 4
        body = data[pos:pos + size]
        pos += size + (4 - size % 4) % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_cpio_writer_roundtrip():
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.directory("etc")
    w.file("etc/x", b"hello", 0o600)
    w.symlink("bin", "usr/bin")
    w.char_device("console", 5, 1)
    w.trailer()
    entries = _parse_newc(buf.getvalue())
    assert entries["etc/x"] == (0o100600, b"hello")
    assert entries["bin"] == (0o120777, b"usr/bin")
    assert entries["etc"][0] == 0o40755
    with pytest.raises(ValueError):
        w.file("etc/x", b"again")


def test_dropbear_key_matches_openssh_public(tmp_path):
    from testbed.hosts.keys import generate_ed25519

    pair = generate_ed25519(tmp_path / "k", use_ssh_keygen=False)
    blob, line = boot.dropbear_ed25519_key(pair.private)
    assert line == pair.openssh_public
    # dropbear's layout: string "ssh-ed25519", string (32-byte seed || 32-byte public key)
    assert blob[:4] == (11).to_bytes(4, "big") and blob[4:15] == b"ssh-ed25519"
    assert blob[15:19] == (64).to_bytes(4, "big") and len(blob) == 19 + 64
    pub = base64.b64decode(line.split()[1])[-32:]
    assert blob[-32:] == pub


def test_management_subnet_is_in_the_benchmarking_range():
    import ipaddress

    assert boot.MGMT_NET.subnet_of(ipaddress.ip_network("198.18.0.0/15"))


# --------------------------------------------------------------------------- root: one VM


@pytest.fixture(scope="module")
def image():
    from testbed.vm.build import build_image

    t0 = time.monotonic()
    img = build_image()
    print(f"\nVM image {img.key}: ready in {time.monotonic() - t0:.1f}s")
    return img


@pytest.fixture(scope="module")
def vm(image, tmp_path_factory):
    from testbed.vm.pair import vm_pair

    run_id = names.new_run_id()
    t0 = time.monotonic()
    with vm_pair(image, run_id, tmp_path_factory.mktemp("vm")) as the_vm:
        print(f"VM booted in {time.monotonic() - t0:.1f}s")
        yield the_vm
    assert_nothing_left(run_id)


@pytest.mark.root
@needs_vm
def test_vm_runs_debian_kernel_with_netem_over_pinned_ssh(vm, image):
    from testbed.hosts.remote import Host, HostAccess, HostKeyMismatch

    assert vm.run("uname -r").stdout.strip() == image.manifest["kernel_version"]
    mods = vm.run("cat /proc/modules").stdout
    for m in ("sch_netem", "virtio_net", "sch_htb", "ifb"):
        assert m in mods
    assert vm.run("ls /usr/lib/x86_64-linux-gnu/tc/normal.dist", check=False).ok
    # the pin is real: the same address with another key is refused
    other = vm.keys.root.parent / "other"
    from testbed.hosts.keys import generate_ed25519

    other.mkdir()
    wrong = generate_ed25519(other / "k", use_ssh_keygen=False)
    access = HostAccess(name="ap", address=vm.host.access.address, port=22,
                        key_file=vm.keys.client.private, host_key=wrong.openssh_public)
    with pytest.raises(HostKeyMismatch):
        Host(access, connect_timeout=20).connect()
    d = vm.describe()
    assert d["image"]["sha256"]["initrd.img"] == image.manifest["sha256"]["initrd.img"]
    assert d["nics"]["md"]["namespace"] == names.namespace_name(vm.run_id, "md")


@pytest.mark.root
@needs_vm
def test_idle_transfers_are_held_to_the_shaped_rate(vm):
    """netem's rate and delay are applied: no one-message transfer beats the time its bytes
    (headers included) take at the rate plus the 2 ms each way, and none takes several times the
    floor (that plus the measured base RTT's stack cost).

    Only the lower bound is tight: a loaded machine can only make a transfer slower, so it holds
    on a shared CI host. How close the median sits to the floor is a fidelity figure, measured by
    ``benchmarks/vm_fidelity.py`` on a quiet machine (README: link emulation), not asserted here.
    """
    from testbed.vm.pair import es_address

    md, es = names.namespace_name(vm.run_id, "md"), names.namespace_name(vm.run_id, "es")
    for rate in (3.0, 24.0):
        rows = shaping.fidelity_rows(vm, md, es, es_address(), rates_mbit=[rate],
                                     delay_ms=2.0, count=9)
        print(f"\n{rate:g} Mbit/s, load average {os.getloadavg()[0]:.2f}\n"
              + shaping.format_rows(rows))
        for r in rows:
            physical_ms = r["floor_hdr_ms"] - r["base_rtt_ms"] + 2 * r["delay_ms"]
            assert r["median_ms"] >= 0.95 * physical_ms, r
            assert r["ratio_hdr"] < 4.0, r


_ECHO = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.0)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    s.sendto(data, peer)
"""


def _udp_probe(client_ns: str, server_ns: str, addr: str, count: int, interval: float,
               port: int = 5700):
    """RTTs (s) of ``count`` UDP echoes md -> es (None = lost): an echo process in ``server_ns``,
    the client socket made inside ``client_ns`` (setns), everything bounded in time."""
    import sys

    budget = count * interval + 3.0
    server = netns.popen_in_namespace(server_ns, [sys.executable, "-c", _ECHO, addr, str(port),
                                                    str(budget + 2)])
    with netns.in_namespace(client_ns):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent: dict[int, int] = {}
    rtts: dict[int, float] = {}
    try:
        time.sleep(0.3)
        deadline = time.monotonic() + budget
        i, next_send = 0, time.monotonic()
        while time.monotonic() < deadline and (i < count or len(rtts) < count):
            now = time.monotonic()
            if i < count and now >= next_send:
                sent[i] = time.perf_counter_ns()
                cli.sendto(i.to_bytes(4, "big") + bytes(60), (addr, port))
                i += 1
                next_send += interval
            wait = max(0.0, min(next_send - time.monotonic(), 0.05)) if i < count else 0.05
            ready, _, _ = select.select([cli], [], [], wait)
            if ready:
                data = cli.recv(2048)
                k = int.from_bytes(data[:4], "big")
                rtts.setdefault(k, (time.perf_counter_ns() - sent[k]) / 1e9)
    finally:
        cli.close()
        server.kill()
        server.wait(timeout=5)
    return [rtts.get(k) for k in range(count)]


@pytest.mark.root
@needs_vm
def test_jitter_and_loss_change_what_a_probe_sees(vm):
    from testbed.vm.pair import es_address

    md, es = names.namespace_name(vm.run_id, "md"), names.namespace_name(vm.run_id, "es")
    shaping.shape_path(vm, Netem(delay_ms=2), Netem(delay_ms=2))
    base = _udp_probe(md, es, es_address(), 150, 0.01)
    report = shaping.shape_path(vm, Netem(delay_ms=6, jitter_ms=4, loss_pct=15),
                                Netem(delay_ms=2))
    assert "loss 15%" in report["uplink"]["qdisc"] and "4ms" in report["uplink"]["qdisc"]  # noqa: E501
    shaped = _udp_probe(md, es, es_address(), 150, 0.01)
    ok_base = [r for r in base if r is not None]
    ok_shaped = [r for r in shaped if r is not None]
    loss_base = 1 - len(ok_base) / len(base)
    loss_shaped = 1 - len(ok_shaped) / len(shaped)
    sd_base, sd_shaped = statistics.pstdev(ok_base), statistics.pstdev(ok_shaped)
    print(f"\nbase: loss {loss_base:.1%}, RTT median {statistics.median(ok_base) * 1e3:.2f} ms "
          f"sd {sd_base * 1e3:.2f} ms; delay 6 ms, jitter 4 ms (normal), loss 15%: loss {loss_shaped:.1%}, "
          f"median {statistics.median(ok_shaped) * 1e3:.2f} ms sd {sd_shaped * 1e3:.2f} ms")
    assert loss_base <= 0.02
    assert 0.05 <= loss_shaped <= 0.30
    assert sd_shaped > sd_base + 1.5e-3
    assert statistics.median(ok_shaped) > statistics.median(ok_base) + 2e-3


# --------------------------------------------------------------------------- root: teardown


@pytest.mark.root
@needs_vm
def test_injected_failure_after_boot_start_leaves_nothing(image, tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) while waiting for SSH: QEMU, taps and namespaces are gone."""
    from testbed.vm.pair import vm_pair

    run_id = names.new_run_id()

    def interrupted(self, vm_ip):
        assert qemu_pids(run_id), "QEMU should be running at this point"
        assert owned_links(run_id), "the management tap should exist at this point"
        raise KeyboardInterrupt

    monkeypatch.setattr(boot.AccessPointVm, "_wait_ssh", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with vm_pair(image, run_id, tmp_path):
            pass
    assert_nothing_left(run_id)


@pytest.mark.root
@needs_vm
def test_clean_stops_a_vm_a_killed_run_left(tmp_path):
    """A QEMU with our pid file, a tap and a record whose owner is dead: `testbed clean` removes
    them (through the hook in testbed.lab.backends.clean)."""
    from pyroute2 import IPRoute

    run_id = names.new_run_id()
    boot.RUN_DIR.mkdir(parents=True, exist_ok=True)
    tap = names.interface_name(run_id, "v0")
    with IPRoute() as ipr:
        ipr.link("add", ifname=tap, kind="tuntap", mode="tap")
    qemu = subprocess.Popen(
        [boot.QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
         "-pidfile", str(boot.pid_file(run_id))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        boot.record_file(run_id).write_text(
            '{"run_id": "%s", "owner_pid": %d, "owner_starttime": 1, "qemu_pid": %d, '
            '"taps": [["%s", null]]}' % (run_id, dead.pid, qemu.pid, tap))
        deadline = time.monotonic() + 10
        while not boot.pid_file(run_id).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert qemu_pids(run_id) == [qemu.pid]
        preview = backends.clean(dry_run=True, run_id=run_id)
        assert any(f"qemu pid {qemu.pid}" in line for line in preview)
        assert qemu_pids(run_id) == [qemu.pid]
        done = backends.clean(run_id=run_id)
        assert any(f"qemu pid {qemu.pid}" in line for line in done)
        qemu.wait(timeout=10)
        assert_nothing_left(run_id)
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        boot.stop_leftover(run_id)
        cleanup.remove_run(run_id)


# --------------------------------------------------------------------------- build progress


def _fake_tool(bin_dir, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


FAKE_APT_GET = r"""echo "$*" >> "$STATE/calls"
case "$1" in
  update) : > "$STATE/updated" ;;
  download)
    shift
    if [ -n "$FAIL_UNTIL_UPDATE" ] && [ ! -e "$STATE/updated" ]; then
      echo "E: Version not found" >&2; exit 100
    fi
    case " $* " in *" $BROKEN="*) echo "E: $BROKEN: broken mirror" >&2; exit 100 ;; esac
    for spec in "$@"; do
      v=$(echo "${spec#*=}" | sed 's/:/%3a/')
      : > "${spec%%=*}_${v}_amd64.deb"
    done ;;
esac
"""


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """An ``apt-get`` on PATH that writes empty .debs and logs its calls in ``tmp/state/calls``;
    ``download`` fails until an ``update`` if FAIL_UNTIL_UPDATE is set, always for package BROKEN."""
    state = tmp_path / "state"
    state.mkdir()
    _fake_tool(tmp_path / "bin", "apt-get", FAKE_APT_GET)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("STATE", str(state))
    monkeypatch.delenv("FAIL_UNTIL_UPDATE", raising=False)
    monkeypatch.setenv("BROKEN", "none")
    return state


def _calls(state, verb: str) -> list[list[str]]:
    lines = (state / "calls").read_text().splitlines()
    return [line.split()[1:] for line in lines if line.split()[0] == verb]


def test_download_moves_in_batches_and_counts_the_cache(tmp_path, fake_apt):
    from testbed.vm.packages import DOWNLOAD_BATCHES, BuildProgress, download

    versions = {f"lib{i:02d}": f"1:{i}.0" for i in range(23)}
    debs = tmp_path / "debs"
    debs.mkdir()
    for name in ("lib00", "lib07", "lib22"):  # already in the cache
        (debs / f"{name}_{versions[name].replace(':', '%3a')}_amd64.deb").touch()
    seen: list[BuildProgress] = []
    messages: list[str] = []
    paths = download(versions, debs, messages.append, seen.append)

    assert sorted(paths) == sorted(versions) and all(p.exists() for p in paths.values())
    batches = _calls(fake_apt, "download")
    assert len(batches) == DOWNLOAD_BATCHES  # 20 missing: 10 runs of apt-get, 2 packages each
    assert [len(b) for b in batches] == [2] * 10
    assert sum(batches, []) == [f"{n}={v}" for n, v in versions.items()
                                if n not in ("lib00", "lib07", "lib22")]
    assert seen[0] == BuildProgress("download", 3, 23)
    assert [p.done for p in seen] == list(range(3, 24, 2))
    assert {p.stage for p in seen} == {"download"} and {p.total for p in seen} == {23}
    assert seen[-1].item == "lib21"
    assert messages == [f"downloading 20 Debian packages into {debs}"]
    assert not _calls(fake_apt, "update")

    # all in the cache now: one report, done == total, no apt-get
    (fake_apt / "calls").unlink()
    seen.clear()
    download(versions, debs, messages.append, seen.append)
    assert seen == [BuildProgress("download", 23, 23)]
    assert not (fake_apt / "calls").exists()


def test_download_refreshes_the_lists_once_then_gives_up(tmp_path, fake_apt, monkeypatch):
    from testbed.vm.packages import BuildError, download

    versions = {"a": "1", "b": "2", "c": "3"}
    monkeypatch.setenv("FAIL_UNTIL_UPDATE", "1")
    seen = []
    messages = []
    download(versions, tmp_path / "debs", messages.append, seen.append)
    assert [p.done for p in seen] == [0, 1, 2, 3]
    assert _calls(fake_apt, "update") == [[]]
    assert _calls(fake_apt, "download") == [["a=1"], ["a=1"], ["b=2"], ["c=3"]]
    assert messages[-1] == "apt-get download failed; refreshing the package lists (apt-get update)"

    # the first failure refreshes the lists; a later one, after the refresh, is final
    (fake_apt / "calls").unlink()
    (fake_apt / "updated").unlink()
    monkeypatch.setenv("BROKEN", "y")
    seen.clear()
    with pytest.raises(BuildError, match="y: broken mirror"):
        download({"x": "9", "y": "9", "z": "9"}, tmp_path / "debs", lambda msg: None, seen.append)
    assert _calls(fake_apt, "update") == [[]]
    assert _calls(fake_apt, "download") == [["x=9"], ["x=9"], ["y=9"]]
    assert [p.done for p in seen] == [0, 1]


def test_unpack_reports_each_package_and_stops_at_a_bad_one(tmp_path, monkeypatch):
    from testbed.vm.packages import BuildError, BuildProgress, unpack

    _fake_tool(tmp_path / "bin", "dpkg", 'echo "$2" >> "$STATE/unpacked"\ncase "$2" in\n'
               '  *bad*) echo "not a debian format archive" >&2; exit 2 ;;\nesac\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("STATE", str(tmp_path))
    debs = {n: tmp_path / f"{n}.deb" for n in ("busybox-static", "iw", "libc6")}
    seen: list[BuildProgress] = []
    unpack(debs, tmp_path / "staging", seen.append)
    assert seen == [BuildProgress("unpack", 0, 3), BuildProgress("unpack", 1, 3, "busybox-static"),
                    BuildProgress("unpack", 2, 3, "iw"), BuildProgress("unpack", 3, 3, "libc6")]
    assert (tmp_path / "unpacked").read_text().split() == [str(p) for p in debs.values()]

    seen.clear()
    with pytest.raises(BuildError, match="not a debian format archive"):
        unpack({n: tmp_path / f"{n}.deb" for n in ("good", "bad", "never")}, tmp_path / "staging",
               seen.append)
    assert [(p.done, p.item) for p in seen] == [(0, ""), (1, "good")]


def test_vm_build_bars_stay_off_a_log_and_messages_still_print(monkeypatch, capsys):
    """Not a TTY (pytest captures stderr): no bars at all, the text messages on stdout."""
    from testbed import cli
    from testbed.vm import build

    def fake_build_image(**kw):
        kw["progress"]("downloading 2 Debian packages into /x")
        for done in range(3):
            kw["on_stage"](build.BuildProgress("download", done, 2, "p" if done else ""))
        kw["on_stage"](build.BuildProgress("unpack", 0, 2))
        kw["on_stage"](build.BuildProgress("unpack", 2, 2, "q"))
        kw["progress"]("VM image k built")
        return kw["force"]

    monkeypatch.setattr(build, "build_image", fake_build_image)
    assert cli._build_vm_image(force="passed through") == "passed through"
    out, err = capsys.readouterr()
    assert out == "downloading 2 Debian packages into /x\nVM image k built\n"
    assert err == ""


@pytest.mark.root
def test_a_cached_image_reports_only_its_resolve_stage(needs_root, image):
    from testbed.vm.build import BuildProgress, build_image

    seen: list[BuildProgress] = []
    assert build_image(on_stage=seen.append).key == image.key
    assert seen == [BuildProgress("resolve", 0, 1), BuildProgress("resolve", 1, 1)]
