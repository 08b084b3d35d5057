"""The SSH host layer end to end: per-run keys, a real sshd in a network namespace, paramiko.

Topology made by the ``lab`` fixture (names start with ``tb-test-`` so leftovers are easy to spot):

    root namespace (pytest, paramiko)            namespace tb-test-XXXX (sshd)
    tb-test-XXXXr  198.18.250.N/30  <--veth-->  tb-test-XXXXn  198.18.250.N+1/30

This is how the orchestrator reaches emulated hosts: a management veth from the root namespace
to each host namespace.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_interface
from pathlib import Path

import pytest

from testbed.hosts.keys import RunKeys, generate_ed25519, public_key_fingerprint
from testbed.hosts.remote import (
    Host,
    HostAccess,
    HostAuthError,
    HostError,
    HostKeyMismatch,
    HostKeyNotPinned,
    HostUnreachable,
    RemoteCommandError,
    RemoteTimeout,
)
from testbed.lab.sshd import SshdError, SshdInstance
from testbed.lab.netns import stop_namespace_processes
from testbed.lab.procs import process_tree

SSHD = "/usr/sbin/sshd"
PORT = 2222


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _why_no_lab() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} not installed (apt install openssh-server)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' not installed"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 not installed"
    return None


def _free_slash30() -> IPv4Network:
    """A /30 in 198.18.250.0/24 not overlapping any address of the root namespace
    (other test runs may be using the same range at the same time)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        used = [
            ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}").network
            for a in ipr.get_addr(family=socket.AF_INET)
        ]
    nets = list(IPv4Network("198.18.250.0/24").subnets(new_prefix=30))
    start = secrets.randbelow(len(nets))
    for net in nets[start:] + nets[:start]:
        if not any(net.overlaps(u) for u in used):
            return net
    pytest.skip("no free /30 left in 198.18.250.0/24")


def _live(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return data[data.rindex(")") + 2] not in "ZX"


def _group_members(host: Host, pgid: int) -> list[tuple[int, str, str]]:
    """(pid, state, args) of the processes of process group ``pgid``, as the host's ps sees them."""
    out = host.run(["ps", "-e", "-o", "pgid=,pid=,stat=,args="], timeout=10).stdout
    members = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and int(parts[0]) == pgid:
            members.append((int(parts[1]), parts[2], parts[3] if len(parts) > 3 else ""))
    return members


@dataclass
class Lab:
    ns: str
    ns_addr: str
    root_addr: str
    ns_ifname: str
    keys: RunKeys
    run_dir: Path
    sshd: SshdInstance


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    why = _why_no_lab()
    if why:
        pytest.skip(why)
    from pyroute2 import IPRoute, NetNS, netns

    tag = secrets.token_hex(2)
    ns = f"tb-test-{tag}"
    root_if, ns_if = f"tb-test-{tag}r", f"tb-test-{tag}n"
    net = _free_slash30()
    root_addr, ns_addr = (str(h) for h in net.hosts())
    run_dir = tmp_path_factory.mktemp("hosts-ssh")
    sshd = None
    try:
        try:
            netns.create(ns)
        except OSError as e:
            pytest.skip(f"cannot create network namespaces here: {e}")
        with IPRoute() as ipr:
            ipr.link("add", ifname=root_if, kind="veth", peer={"ifname": ns_if, "net_ns_fd": ns})
            idx = ipr.link_lookup(ifname=root_if)[0]
            ipr.addr("add", index=idx, address=root_addr, prefixlen=30)
            ipr.link("set", index=idx, state="up")
        with NetNS(ns) as nsr:
            for ifname in ("lo", ns_if):
                i = nsr.link_lookup(ifname=ifname)[0]
                nsr.link("set", index=i, state="up")
            i = nsr.link_lookup(ifname=ns_if)[0]
            nsr.addr("add", index=i, address=ns_addr, prefixlen=30)

        keys = RunKeys.create(run_dir / "keys", [("a", ns_addr, PORT)])
        sshd = SshdInstance.from_run_keys(keys, "a", ns, run_dir)
        t0 = time.monotonic()
        sshd.start()
        print(f"sshd ready in {time.monotonic() - t0:.3f}s")
        yield Lab(ns, ns_addr, root_addr, ns_if, keys, run_dir, sshd)
    finally:
        if sshd is not None:
            sshd.stop()
        try:
            if (Path("/run/netns") / ns).exists():
                stop_namespace_processes(ns, term_grace_s=1.0)
        finally:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=root_if)
                if found:
                    ipr.link("del", index=found[0])
            if ns in netns.listnetns():
                netns.remove(ns)


@pytest.fixture(scope="module")
def host(lab):
    h = Host(HostAccess.from_run_keys(lab.keys, "a"), connect_timeout=5)
    h.connect()
    yield h
    h.close()


# --------------------------------------------------------------------------------------------
# keys (no root needed)
# --------------------------------------------------------------------------------------------
def test_run_keys_layout_and_modes(tmp_path):
    keys = RunKeys.create(tmp_path / "k", [("md", "198.18.0.2", 22), ("es", "198.18.0.3", 2200)])
    assert stat.S_IMODE(keys.root.stat().st_mode) == 0o700
    for kp in (keys.client, keys.hosts["md"].key, keys.hosts["es"].key):
        assert stat.S_IMODE(kp.private.stat().st_mode) == 0o600
        assert kp.key_type == "ssh-ed25519"
    assert keys.authorized_keys.read_text().split()[:2] == keys.client.public_line.split()[:2]
    lines = keys.known_hosts.read_text().splitlines()
    assert lines[0].startswith("198.18.0.2 ssh-ed25519 ")
    assert lines[1].startswith("[198.18.0.3]:2200 ssh-ed25519 ")
    assert lines[1].split()[1:3] == keys.hosts["es"].key.openssh_public.split()[:2]
    # host keys differ from each other and from the client key
    assert len({keys.client.key_base64, *(e.key.key_base64 for e in keys.hosts.values())}) == 3
    with pytest.raises(FileExistsError):
        RunKeys.create(tmp_path / "k")


def test_cryptography_fallback_key_is_valid_openssh(tmp_path):
    kp = generate_ed25519(tmp_path / "id", "fallback", use_ssh_keygen=False)
    if shutil.which("ssh-keygen"):
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(kp.private)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert derived[:2] == kp.public_line.split()[:2]
    assert public_key_fingerprint(kp.public_line).startswith("SHA256:")


def test_command_line_quoting_env_and_sudo(tmp_path):
    h = Host(HostAccess(name="x", address="198.18.0.9", key_file=tmp_path / "k", host_key="ssh-ed25519 AAAA", sudo=True))
    assert h.command_line(["echo", "a b", "$HOME"], env={"X": "1 2"}) == "sudo -n env 'X=1 2' echo 'a b' '$HOME'"
    h2 = Host(HostAccess(name="x", address="198.18.0.9", key_file=tmp_path / "k", host_key="ssh-ed25519 AAAA"))
    assert h2.command_line("echo $HOME") == "echo $HOME"
    assert h2.command_line(["true"], timeout_wrap=2.5) == "timeout -k 2 3 true"
    with pytest.raises(ValueError):
        HostAccess(name="x", address="198.18.0.9", key_file=tmp_path / "k")  # nothing pinned


# --------------------------------------------------------------------------------------------
# sshd + paramiko in a namespace
# --------------------------------------------------------------------------------------------
@pytest.mark.root
def test_run_executes_inside_namespace(lab, host):
    res = host.run(["ip", "-o", "addr"], timeout=10)
    assert res.rc == 0
    assert f"{lab.ns_addr}/30" in res.stdout and lab.ns_ifname in res.stdout
    # the root side of the veth is NOT visible: the command ran inside the namespace
    assert f"{lab.root_addr}/30" not in res.stdout
    # sshd itself lives in the namespace
    assert os.stat(f"/proc/{lab.sshd.pid}/ns/net").st_ino == os.stat(f"/run/netns/{lab.ns}").st_ino
    assert host.run("echo $FOO", timeout=10, env={"FOO": "bar baz"}).stdout.strip() == "bar baz"
    with pytest.raises(RemoteCommandError, match="status 3"):
        host.run(["sh", "-c", "exit 3"], timeout=10)
    assert host.run(["sh", "-c", "exit 3"], timeout=10, check=False).rc == 3


@pytest.mark.root
def test_wrong_pinned_host_key_is_rejected(lab, tmp_path):
    other = generate_ed25519(tmp_path / "other", "not-the-host")
    access = HostAccess(
        name="a-impostor", address=lab.ns_addr, port=PORT,
        key_file=lab.keys.client.private, host_key=other.public_line,
    )
    with pytest.raises(HostKeyMismatch) as ei:
        Host(access, connect_timeout=5).connect()
    msg = str(ei.value)
    assert "HOST KEY MISMATCH" in msg and "a-impostor" in msg
    assert lab.keys.hosts["a"].key.fingerprint in msg and other.fingerprint in msg

    # a known_hosts file without this host: nothing to check against, refuse before connecting
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{lab.ns_addr}]:{PORT + 1} {lab.keys.hosts['a'].key.openssh_public}\n")
    with pytest.raises(HostKeyNotPinned, match="no key for"):
        Host(HostAccess(name="a", address=lab.ns_addr, port=PORT, key_file=lab.keys.client.private,
                        known_hosts=kh)).connect()


@pytest.mark.root
def test_wrong_client_key_and_unreachable_port(lab, tmp_path):
    stranger = generate_ed25519(tmp_path / "stranger", "stranger")
    access = HostAccess(name="a", address=lab.ns_addr, port=PORT, key_file=stranger.private,
                        known_hosts=lab.keys.known_hosts)
    with pytest.raises(HostAuthError, match="authorized_keys"):
        Host(access, connect_timeout=5).connect()

    t0 = time.monotonic()
    closed = HostAccess(name="a-closed", address=lab.ns_addr, port=PORT + 77,
                        key_file=lab.keys.client.private, host_key=lab.keys.hosts["a"].key.public_line)
    with pytest.raises(HostUnreachable, match="a-closed"):
        Host(closed, connect_timeout=3).connect()
    assert time.monotonic() - t0 < 4


@pytest.mark.root
def test_remote_process_stop_kills_whole_group(host, tmp_path):
    logdir = f"/tmp/tb-test-{secrets.token_hex(3)}"
    try:
        # a shell with a background child and a foreground child: three processes in one group
        proc = host.start(["sh", "-c", "sleep 30 & exec sleep 30.5"], name="sleeper", log_dir_remote=logdir)
        assert proc.pgid == proc.pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            live = [m for m in _group_members(host, proc.pgid) if not m[1].startswith("Z")]
            if len(live) >= 3:
                break
            time.sleep(0.05)
        assert len(live) >= 3, live
        assert any("sleep 30.5" in m[2] for m in live) and any(m[2] == "sleep 30" for m in live)
        # its own session: not the sshd session of the launching command
        assert host.run(["ps", "-o", "sid=", "-p", str(proc.pid)], timeout=10).stdout.strip() == str(proc.pid)
        assert proc.alive()
        t0 = time.monotonic()
        assert proc.wait(0.3) is None  # still running
        assert time.monotonic() - t0 < 3

        proc.stop(grace=3)
        live = [m for m in _group_members(host, proc.pgid) if not m[1].startswith("Z")]
        assert live == [], live
        for pid, _, _ in _group_members(host, proc.pgid):  # only zombies may remain, if any
            assert not _live(pid)
        assert not proc.alive()
        assert proc.wait(2) == 143  # the wrapper recorded SIGTERM of its command
        proc.stop()  # idempotent
    finally:
        host.run(["rm", "-rf", logdir], timeout=10)


@pytest.mark.root
def test_wait_returns_exit_code_and_logs_fetched(host, tmp_path):
    logdir = f"/tmp/tb-test-{secrets.token_hex(3)}"
    try:
        proc = host.start(
            ["sh", "-c", 'echo "hello $GREETING"; echo oops >&2; sleep 0.2; exit 7'],
            name="short", log_dir_remote=logdir, env={"GREETING": "world"},
        )
        assert proc.wait(10) == 7
        assert not proc.alive()
        files = {p.suffix: p for p in proc.fetch_logs(tmp_path / "logs")}
        assert files[".out"].read_text() == "hello world\n"
        assert files[".err"].read_text() == "oops\n"
        assert files[".rc"].read_text().strip() == "7"
    finally:
        host.run(["rm", "-rf", logdir], timeout=10)


@pytest.mark.root
def test_put_get_roundtrip(host, tmp_path):
    payload = os.urandom(300_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    remote = f"/tmp/tb-test-{secrets.token_hex(3)}.bin"
    try:
        host.put(src, remote, mode=0o640)
        res = host.run(["stat", "-c", "%s %a", remote], timeout=10).stdout.split()
        assert res == [str(len(payload)), "640"]
        back = host.get(remote, tmp_path / "back" / "blob.bin")
        assert back.read_bytes() == payload
        with pytest.raises(HostError, match="get"):
            host.get(remote + ".missing", tmp_path / "nope")
    finally:
        host.run(["rm", "-f", remote], timeout=10)


@pytest.mark.root
def test_run_timeout_is_bounded_and_kills_command(host):
    marker = "7.777"  # unusual duration to find the process
    t0 = time.monotonic()
    with pytest.raises(RemoteTimeout, match="within 1s") as ei:
        host.run(["sleep", marker], timeout=1)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 2.0, elapsed
    assert isinstance(ei.value, TimeoutError) and ei.value.host == "a"
    # the host's timeout(1) kills it shortly after our bound (1 s + 1 s margin)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ps = host.run(["ps", "-e", "-o", "stat=,args="], timeout=10).stdout.splitlines()
        if not any(line.split(None, 1)[-1] == f"sleep {marker}" and not line.startswith("Z") for line in ps):
            break
        time.sleep(0.2)
    else:
        pytest.fail("remote 'sleep' survived its run() timeout")


@pytest.mark.root
def test_sshd_stop_leaves_no_process(lab):
    lab.keys.add_host("a2", lab.ns_addr, PORT + 1)
    sshd = SshdInstance.from_run_keys(lab.keys, "a2", lab.ns, lab.run_dir)
    sshd.start()
    h = Host(HostAccess.from_run_keys(lab.keys, "a2"), connect_timeout=5).connect()
    try:
        h.run(["true"], timeout=10)
        listener = sshd.pid
        tree = process_tree(listener)
        assert tree, "expected per-connection sshd processes"
        t0 = time.monotonic()
        sshd.stop()  # with a live connection: its sshd processes must go too
        assert time.monotonic() - t0 < 5
        assert not Path(f"/proc/{listener}").exists()
        for pid in tree:  # reaped by the listener, not left as zombies
            assert not Path(f"/proc/{pid}").exists(), pid
        assert not sshd.running and not sshd.pid_file.exists()
        sshd.stop()  # idempotent
        assert "Server listening" in sshd.log_path.read_text()
        with pytest.raises(HostError):
            h.run(["true"], timeout=5)
    finally:
        h.close()
        sshd.stop()
    assert lab.sshd.running  # the module's sshd (same namespace) was not touched


@pytest.mark.root
def test_sshd_start_failure_reports_its_log(lab, tmp_path):
    bad = SshdInstance(
        lab.ns, "198.18.251.77", PORT, tmp_path, name="nowhere",
        host_key=lab.keys.hosts["a"].key.private, authorized_keys=lab.keys.authorized_keys,
        start_timeout=3,
    )
    t0 = time.monotonic()
    with pytest.raises(SshdError, match="(?s)nowhere.*sshd log.*(bind|Cannot)"):
        bad.start()
    assert time.monotonic() - t0 < 4
    assert not bad.running
