"""A real OpenSSH server (Debian's ``/usr/sbin/sshd``) inside a network namespace.

Every emulated host of the lab runs its own sshd with key material made for the run
(:mod:`testbed.hosts.keys`), so the orchestrator reaches emulated hosts exactly the way it
reaches real lab machines: over SSH with paramiko (:mod:`testbed.hosts.remote`).

How the process is launched
    ``ip netns exec NS /usr/sbin/sshd -D -e -f <run config>``, through :class:`subprocess.Popen`
    with ``start_new_session=True``. ``ip netns exec`` enters the namespace, unshares a private
    mount namespace (so ``/sys`` matches the netns) and then ``exec``\\ s sshd, so the pid we hold
    *is* the sshd listener's pid. It is a session and process-group leader of its own, hence a
    Ctrl-C in the orchestrator's terminal (SIGINT to the foreground group) does not reach it and
    cannot race the orderly teardown. A ``preexec_fn`` calling ``setns`` was rejected: it is
    unsafe in a multi-threaded process (paramiko runs a thread per connection) and it would not
    give sshd the namespace-matching ``/sys``.

Gotchas handled here
    * sshd needs its privilege separation directory ``/run/sshd`` (created if missing, 0755).
    * ``-D`` keeps sshd in the foreground, ``-e`` sends its log to stderr, which goes to
      ``run_dir/logs/sshd-<host>.log``.
    * The config is self-contained (Debian's ``/etc/ssh/sshd_config`` is not read, and with it its
      ``Subsystem sftp`` line): we declare ``Subsystem sftp internal-sftp`` ourselves.
    * ``UsePAM no`` means sshd itself checks for locked accounts: a root password field starting
      with ``!`` in ``/etc/shadow`` makes sshd refuse root even with a valid key (``*`` is fine).
    * On SIGTERM the listener exits but per-connection sshd processes (each in its own session)
      survive by design. :meth:`SshdInstance.stop` therefore terminates the connection processes
      first, while the listener is still alive to reap them (no zombies left behind where PID 1
      does not reap orphans, e.g. minimal VMs/containers), then the listener's process group, then
      SIGKILLs whatever of the recorded process tree is left.
    * Readiness is judged inside the namespace (``/proc/<pid>/net/tcp{,6}`` shows the LISTEN
      socket of sshd's own netns) and then, by default, by reading the SSH banner from the
      caller's namespace, which proves the management path from the orchestrator works.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping

from testbed.lab import netns, procs

log = logging.getLogger(__name__)

__all__ = ["SshdError", "SshdInstance", "ensure_privsep_dir"]

DEFAULT_SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


class SshdError(RuntimeError):
    """sshd could not be configured, started or reached."""


def ensure_privsep_dir(path: Path = PRIVSEP_DIR) -> None:
    """sshd refuses to start without its privilege separation directory (root-owned, 0755)."""
    if not path.is_dir():
        log.info("creating sshd privilege separation directory %s", path)
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(path, 0o755)


def _cfg_value(value: str | Path) -> str:
    s = str(value)
    if '"' in s or "\n" in s:
        raise SshdError(f"cannot put {s!r} in sshd_config (quote or newline)")
    return f'"{s}"' if any(c.isspace() for c in s) else s


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "(no log written)"
    text = data[-limit:].decode(errors="replace").strip()
    return text or "(log is empty)"


# --------------------------------------------------------------------------------------------
# The sshd instance
# --------------------------------------------------------------------------------------------
class SshdInstance:
    """One sshd for one emulated host.

    ``namespace``: the host's network namespace (``None``: the caller's own namespace).
    ``address``/``port``: where sshd listens (``ListenAddress``).
    ``run_dir``: the run's folder; config and pid file go to ``run_dir/sshd/``, the log to
    ``run_dir/logs/sshd-<name>.log``.
    ``host_key``/``authorized_keys``: this run's files (see :class:`testbed.hosts.keys.RunKeys`;
    :meth:`from_run_keys` fills both in).
    ``probe``: after sshd listens inside the namespace, also require its banner to be readable
    from the caller's namespace (proves the management route works).
    ``skip_shell_rc``: make the login shell (bash) skip ``~/.bashrc`` for ssh commands, as on a
    host whose rc files are trivial; off by default, so the emulated host behaves like a real one.
    ``extra_options``: more ``sshd_config`` keywords (override the defaults).
    """

    def __init__(
        self,
        namespace: str | None,
        address: str,
        port: int,
        run_dir: Path,
        *,
        host_key: Path,
        authorized_keys: Path,
        name: str | None = None,
        sshd_path: str = DEFAULT_SSHD,
        start_timeout: float = 10.0,
        probe: bool = True,
        log_level: str = "VERBOSE",
        skip_shell_rc: bool = False,
        extra_options: Mapping[str, str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.address = str(ipaddress.ip_address(address))
        self.port = int(port)
        if not 0 < self.port < 65536:
            raise ValueError(f"bad port {port}")
        self.run_dir = Path(run_dir)
        self.host_key = Path(host_key)
        self.authorized_keys = Path(authorized_keys)
        self.name = name or namespace or f"{self.address}-{self.port}"
        self.sshd_path = sshd_path
        self.start_timeout = float(start_timeout)
        self.probe = probe
        self.log_level = log_level
        self.skip_shell_rc = skip_shell_rc
        self.extra_options = dict(extra_options or {})
        self._proc: subprocess.Popen | None = None
        self._log_fh = None

    @classmethod
    def from_run_keys(
        cls, keys, name: str, namespace: str | None, run_dir: Path, **kwargs
    ) -> "SshdInstance":
        """Build the sshd of host ``name`` from a :class:`~testbed.hosts.keys.RunKeys`."""
        entry = keys.hosts[name]
        return cls(
            namespace,
            entry.address,
            entry.port,
            run_dir,
            host_key=entry.key.private,
            authorized_keys=keys.authorized_keys,
            name=name,
            **kwargs,
        )

    # ---- paths ----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.run_dir / "sshd" / f"sshd-{self.name}.conf"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "sshd" / f"sshd-{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / f"sshd-{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        where = f"netns {self.namespace}" if self.namespace else "own netns"
        return f"SshdInstance({self.name}, {self.address}:{self.port}, {where}, pid={self.pid})"

    # ---- configuration --------------------------------------------------------------------
    def config_text(self) -> str:
        listen = (
            f"[{self.address}]:{self.port}"
            if ipaddress.ip_address(self.address).version == 6
            else f"{self.address}:{self.port}"
        )
        # '%' is a token character in AuthorizedKeysFile
        ak = _cfg_value(str(self.authorized_keys.resolve()).replace("%", "%%"))
        options: dict[str, str] = {
            "ListenAddress": listen,
            "HostKey": _cfg_value(self.host_key.resolve()),
            "AuthorizedKeysFile": ak,
            "PidFile": _cfg_value(self.pid_file.resolve()),
            "PubkeyAuthentication": "yes",
            "AuthenticationMethods": "publickey",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PermitRootLogin": "prohibit-password",
            "StrictModes": "no",
            "UsePAM": "no",
            "Subsystem": "sftp internal-sftp",
            "LogLevel": self.log_level,
            "UseDNS": "no",
            "PrintMotd": "no",
            "PrintLastLog": "no",
            "X11Forwarding": "no",
            "PermitUserEnvironment": "no",
            "LoginGraceTime": "30",
            # the orchestrator opens several channels/connections at once
            "MaxSessions": "64",
            "MaxStartups": "64:30:128",
            # drop connections of a vanished orchestrator
            "ClientAliveInterval": "15",
            "ClientAliveCountMax": "4",
        }
        if self.skip_shell_rc:
            # Debian's bash sources ~/.bashrc for commands run over ssh when SHLVL < 1; a heavy
            # root .bashrc (pyenv init, ...) then costs ~0.3 s per command. SHLVL=1 skips it.
            options["SetEnv"] = "SHLVL=1"
        options.update(self.extra_options)
        lines = [f"# sshd config for emulated host {self.name} (written by testbed.lab.sshd)"]
        lines += [f"{k} {v}" for k, v in options.items()]
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        return self.config_path

    def _check_prerequisites(self) -> None:
        if os.geteuid() != 0:
            raise SshdError("sshd for emulated hosts must be started as root")
        if not os.access(self.sshd_path, os.X_OK):
            raise SshdError(f"{self.sshd_path} not found or not executable (apt install openssh-server)")
        for what, path in (("host key", self.host_key), ("authorized_keys", self.authorized_keys)):
            if not path.is_file():
                raise SshdError(f"{self.name}: {what} {path} does not exist")
        mode = self.host_key.stat().st_mode & 0o077
        if mode:
            raise SshdError(
                f"{self.name}: host key {self.host_key} is readable by group/others "
                f"(mode {oct(self.host_key.stat().st_mode & 0o777)}); sshd rejects it, chmod 600"
            )

    def _launch_argv(self) -> list[str]:
        argv = [self.sshd_path, "-D", "-e", "-f", str(self.config_path)]
        if self.namespace is None:
            return argv
        ip = shutil.which("ip") or "/usr/sbin/ip"
        return [ip, "netns", "exec", self.namespace, *argv]

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "SshdInstance":
        """Start sshd and wait (bounded by ``start_timeout``) until it accepts connections."""
        if self.running:
            return self
        self._check_prerequisites()
        if self.namespace is not None and not netns.namespace_exists(self.namespace):
            raise SshdError(f"network namespace {self.namespace!r} does not exist "
                            f"({netns.netns_path(self.namespace)} missing): create it before "
                            "starting its sshd")
        ensure_privsep_dir()
        self.write_config()
        check = subprocess.run(
            [self.sshd_path, "-t", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=15,
        )
        if check.returncode != 0:
            raise SshdError(
                f"{self.name}: sshd rejected its config {self.config_path}: "
                f"{(check.stderr or check.stdout).strip()}"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab", buffering=0)
        self._log_fh.write(
            f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting sshd for {self.name} "
            f"at {self.address}:{self.port} ---\n".encode()
        )
        argv = self._launch_argv()
        log.info("starting sshd for %s: %s", self.name, " ".join(argv))
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            self._log_fh.close()
            self._log_fh = None
            raise SshdError(f"{self.name}: cannot launch {argv[0]}: {e}") from e
        try:
            self._wait_ready()
        except BaseException:
            self.stop(grace=1.0)
            raise
        log.info("sshd for %s ready at %s:%s (pid %d)", self.name, self.address, self.port, self.pid)
        return self

    def _fail(self, why: str) -> SshdError:
        time.sleep(0.05)  # let sshd flush its last words
        return SshdError(
            f"sshd for {self.name} ({self.address}:{self.port}"
            f"{', netns ' + self.namespace if self.namespace else ''}) {why}.\n"
            f"sshd log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        pid = self._proc.pid
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_running()
            in_ns = self.namespace is None or netns.in_same_namespace(pid, self.namespace)
            if in_ns and procs.listening(pid, self.address, self.port):
                break
            if time.monotonic() >= deadline:
                raise self._fail(
                    f"was not listening on {self.address}:{self.port} inside its namespace "
                    f"after {self.start_timeout:g}s (is the address configured on an "
                    "interface of the namespace?)"
                )
            time.sleep(0.02)
        if not self.probe:
            return
        try:
            wait_for_ssh(self.address, self.port, max(0.0, deadline - time.monotonic()),
                         still_starting=self._check_running)
        except TimeoutError as e:
            raise self._fail(
                f"listens inside its namespace but {self.address}:{self.port} is not "
                f"reachable from the orchestrator's namespace after {self.start_timeout:g}s "
                f"({e}); check the management veth, its addresses and routes"
            ) from None

    def _check_running(self) -> None:
        assert self._proc is not None
        rc = self._proc.poll()
        if rc is not None:
            raise self._fail(f"exited with status {rc} during startup")

    def stop(self, grace: float = 3.0) -> None:
        """Terminate sshd, its connection processes and their children. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self._terminate(proc, grace)
            else:
                log.warning("sshd for %s had already exited with status %s", self.name, proc.returncode)
        finally:
            self._proc = None
            if self._log_fh is not None:
                try:
                    self._log_fh.close()
                finally:
                    self._log_fh = None
            try:
                self.pid_file.unlink()
            except FileNotFoundError:
                pass

    def _terminate(self, proc: subprocess.Popen, grace: float) -> None:
        pid = proc.pid
        tree = procs.process_tree(pid)
        direct = {p: s for p, s in tree.items() if (procs.proc_stat(p) or ("", -1))[1] == pid}
        # 1. connection processes first, while the listener is alive to reap them
        for p in direct:
            procs.send(p, signal.SIGTERM)
        procs.wait_gone(direct, max(grace / 2, 0.2))
        # 2. the listener's own process group
        procs.send_group(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=max(grace / 2, 0.2))
        except subprocess.TimeoutExpired:
            log.warning("sshd for %s ignored SIGTERM, sending SIGKILL", self.name)
            procs.send_group(pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # 3. anything of the recorded tree still alive (sessions' children, stragglers)
        left = [p for p, s in tree.items() if procs.is_running(p, s)]
        if left:
            procs.stop_pids(left, term_grace_s=max(grace / 2, 0.2))
        log.info("sshd for %s stopped (status %s)", self.name, proc.returncode)

    def __enter__(self) -> "SshdInstance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_ssh(address: str, port: int, timeout_s: float, *,
                 still_starting: Callable[[], None] = lambda: None, poll_s: float = 0.02) -> None:
    """Poll (bounded by ``timeout_s``, at least one try) until an SSH server at address:port
    sends its ``SSH-`` banner. ``still_starting()`` runs before each try and raises if the server
    has died meanwhile. ``TimeoutError`` says what the last try met."""
    deadline = time.monotonic() + timeout_s
    while True:
        still_starting()
        try:
            banner = _read_banner(address, port, timeout=1.0)
            if banner.startswith(b"SSH-"):
                return
            last = f"unexpected banner {banner[:60]!r}"
        except OSError as e:
            last = str(e) or type(e).__name__
        if time.monotonic() >= deadline:
            raise TimeoutError(last)
        time.sleep(poll_s)


def _read_banner(address: str, port: int, timeout: float) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.settimeout(timeout)
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        # say hello so sshd logs a clean disconnect rather than a protocol error
        try:
            s.sendall(b"SSH-2.0-testbed_probe\r\n")
        except OSError:
            pass
        return data
