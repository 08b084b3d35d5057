"""SSH access to one testbed host (emulated namespace or real lab machine) with paramiko.

* :class:`HostAccess` -- how to reach a host: address, port, user, client key, pinned host key.
* :class:`Host` -- one paramiko connection: bounded :meth:`Host.run`, background
  :meth:`Host.start`, SFTP :meth:`Host.put`/:meth:`Host.get`.
* :class:`RemoteProcess` -- a background process on a host with an explicit lifetime.

Security: the server's host key is *pinned*. The client loads no system known_hosts, uses
:class:`paramiko.RejectPolicy` and knows only the key(s) recorded for this very host (from this
run's ``known_hosts`` or an explicit ``host_key`` line). No agent, no ``~/.ssh`` key discovery.

Commands are sent as one string: explicit argv lists are quoted with :func:`shlex.join`; a plain
string is passed to the remote shell as is. ``env`` becomes an ``env K=V ...`` prefix (sshd's
``AcceptEnv`` is not relied on), ``sudo=True`` prefixes ``sudo -n``.

Background processes (:meth:`Host.start`) run under a small POSIX-sh wrapper started with
``setsid``, so the wrapper leads a new session and process group (pgid == recorded pid). The
wrapper writes its pid to ``<log_dir>/<name>.pid``, runs the command with stdout/stderr to
``<name>.out``/``<name>.err`` and writes the exit status to ``<name>.rc`` when it ends. It traps
TERM/INT/HUP, so when :meth:`RemoteProcess.stop` signals the group the command dies but the
wrapper survives long enough to record its status (143 for SIGTERM). Liveness checks read
``/proc/*/stat`` and ignore zombies: where PID 1 does not reap orphans (minimal VMs and
containers) a finished wrapper lingers as a zombie and ``kill -0`` would wrongly say "alive".
"""

from __future__ import annotations

import base64
import logging
import math
import re
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from .keys import known_hosts_name, public_key_fingerprint

log = logging.getLogger(__name__)

__all__ = [
    "HostAccess",
    "Host",
    "Completed",
    "RemoteProcess",
    "HostError",
    "HostUnreachable",
    "HostKeyMismatch",
    "HostKeyNotPinned",
    "HostAuthError",
    "RemoteCommandError",
    "RemoteTimeout",
    "RemoteFileError",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class HostError(RuntimeError):
    """Something went wrong talking to a host; the message names the host."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host


class HostUnreachable(HostError):
    """TCP connection or SSH handshake to the host failed."""


class HostKeyMismatch(HostError):
    """The host presented a key other than the pinned one."""


class HostKeyNotPinned(HostError):
    """No pinned key is known for the host (nothing to check its key against)."""


class HostAuthError(HostError):
    """The host refused our client key."""


class RemoteFileError(HostError):
    """An SFTP transfer failed."""


class RemoteCommandError(HostError):
    """A command exited with a non-zero status (``check=True``)."""

    def __init__(self, host: str, message: str, completed: "Completed") -> None:
        super().__init__(host, message)
        self.completed = completed


class RemoteTimeout(HostError, TimeoutError):
    """A remote operation did not finish within its bound."""

    def __init__(self, host: str, message: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(host, message)
        self.stdout = stdout
        self.stderr = stderr


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class HostAccess:
    """How to reach one host. Give ``known_hosts`` (a file) or ``host_key`` (one
    ``"keytype base64 [comment]"`` line); either pins the key the host must present."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: Path
    known_hosts: Path | None = None
    host_key: str | None = None
    python: str = "python3"
    sudo: bool = False

    def __post_init__(self) -> None:
        if self.known_hosts is None and self.host_key is None:
            raise ValueError(
                f"host {self.name}: give known_hosts or host_key; the host key is always pinned"
            )
        object.__setattr__(self, "key_file", Path(self.key_file))
        if self.known_hosts is not None:
            object.__setattr__(self, "known_hosts", Path(self.known_hosts))
        object.__setattr__(self, "port", int(self.port))

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.address, self.port)

    @property
    def where(self) -> str:
        return f"{self.name} ({self.user}@{self.address}:{self.port})"

    @classmethod
    def from_run_keys(cls, keys, name: str, **kwargs) -> "HostAccess":
        """Access to emulated host ``name`` with a :class:`~testbed.hosts.keys.RunKeys`."""
        entry = keys.hosts[name]
        return cls(
            name=name,
            address=entry.address,
            port=entry.port,
            key_file=keys.client.private,
            known_hosts=keys.known_hosts,
            **kwargs,
        )


@dataclass(frozen=True)
class Completed:
    """Result of :meth:`Host.run`."""

    rc: int
    stdout: str
    stderr: str
    command: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {public_key_fingerprint(key.get_name() + ' ' + key.get_base64())}"


# --------------------------------------------------------------------------------------------
# Remote shell snippets (POSIX sh; arguments are passed positionally, never interpolated)
# --------------------------------------------------------------------------------------------
# Live (non-zombie) members of process group $1, one pid per line.
_MEMBERS_FN = r"""members() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($3 == g && $1 != "Z" && $1 != "X") print pid }'
}
"""

# $1 log dir, $2 name, then the command argv. Prints the wrapper's pid (== pgid).
# `setsid -f` (fork) rather than `setsid ... &`: an asynchronous list of a non-interactive shell
# starts with SIGINT/SIGQUIT ignored, and the command would inherit that.
_LAUNCH = r"""d=$1; n=$2; shift 2
mkdir -p "$d" || exit 90
rm -f "$d/$n.pid" "$d/$n.rc" "$d/$n.rc.tmp"
setsid -f sh -c 'trap : TERM INT HUP; echo $$ > "$1"; o=$2; e=$3; r=$4; shift 4
"$@" </dev/null >"$o" 2>"$e"
echo $? > "$r.tmp"; mv -f "$r.tmp" "$r"' "tb-$n" "$d/$n.pid" "$d/$n.out" "$d/$n.err" "$d/$n.rc" "$@" </dev/null >/dev/null 2>&1 || exit 92
i=0
while [ ! -s "$d/$n.pid" ]; do
  i=$((i+1)); if [ $i -gt 200 ]; then echo "wrapper did not write $d/$n.pid" >&2; exit 91; fi
  sleep 0.05
done
cat "$d/$n.pid"
"""

# $1 pgid, $2 rc file. Prints "yes" or "no".
_ALIVE = _MEMBERS_FN + r"""if [ -n "$(members "$1")" ]; then echo yes; else echo no; fi
"""

# $1 pgid, $2 rc file, $3 max polls of 0.1 s. Prints the exit status, RUNNING or GONE.
_WAIT = _MEMBERS_FN + r"""i=0
while [ ! -e "$2" ] && [ -n "$(members "$1")" ] && [ $i -lt "$3" ]; do sleep 0.1; i=$((i+1)); done
if [ -e "$2" ]; then cat "$2"; elif [ -n "$(members "$1")" ]; then echo RUNNING; else echo GONE; fi
"""

# $1 pgid, $2 rc file, $3 grace polls of 0.1 s. TERM the group; after the grace period KILL
# the members except the wrapper (so it can record the status), then anything left.
# NB: dash's builtin kill does not accept "--": signal a group as `kill -TERM -PGID`.
_STOP = _MEMBERS_FN + r"""g=$1
if [ -e "$2" ] && [ -z "$(members "$g")" ]; then echo DONE; exit 0; fi
kill -TERM "-$g" 2>/dev/null
i=0
while [ -n "$(members "$g")" ] && [ $i -lt "$3" ]; do sleep 0.1; i=$((i+1)); done
if [ -n "$(members "$g")" ]; then
  for p in $(members "$g"); do [ "$p" = "$g" ] || kill -KILL "$p" 2>/dev/null; done
  i=0
  while [ -n "$(members "$g")" ] && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "-$g" 2>/dev/null
  echo KILLED
else
  echo TERMINATED
fi
"""


# --------------------------------------------------------------------------------------------
# Host
# --------------------------------------------------------------------------------------------
class Host:
    """One SSH connection to one host. Use as a context manager or call :meth:`connect`."""

    def __init__(
        self,
        access: HostAccess,
        connect_timeout: float = 10,
        *,
        keepalive: float = 15.0,
        sftp_timeout: float = 60.0,
    ) -> None:
        self.access = access
        self.connect_timeout = float(connect_timeout)
        self.keepalive = keepalive
        self.sftp_timeout = sftp_timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return self.access.name

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"Host({self.access.where}, {state})"

    # ---- connection -----------------------------------------------------------------------
    def _pinned_keys(self) -> dict[str, paramiko.PKey]:
        a = self.access
        hk_name = a.known_hosts_name
        keys: dict[str, paramiko.PKey] = {}
        if a.host_key is not None:
            parts = a.host_key.split()
            if len(parts) < 2:
                raise HostKeyNotPinned(a.name, f"{a.where}: host_key {a.host_key!r} is not 'keytype base64'")
            try:
                keys[parts[0]] = paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
            except Exception as e:  # UnknownKeyType, binascii.Error, SSHException
                raise HostKeyNotPinned(
                    a.name, f"{a.where}: cannot parse pinned host_key {a.host_key!r}: {e}"
                ) from e
        if a.known_hosts is not None:
            if not a.known_hosts.is_file():
                raise HostKeyNotPinned(a.name, f"{a.where}: known_hosts file {a.known_hosts} does not exist")
            found = paramiko.HostKeys(str(a.known_hosts)).lookup(hk_name)
            if found:
                for keytype in found.keys():
                    keys.setdefault(keytype, found[keytype])
            elif a.host_key is None:
                raise HostKeyNotPinned(
                    a.name,
                    f"{a.where}: no key for {hk_name!r} in {a.known_hosts}; the known_hosts of "
                    "this run must list this host (address and port must match exactly)",
                )
        return keys

    def connect(self) -> "Host":
        """Open the SSH connection (no-op if already connected)."""
        with self._lock:
            if self.connected:
                return self
            a = self.access
            pinned = self._pinned_keys()
            try:
                pkey = paramiko.PKey.from_path(a.key_file)
            except FileNotFoundError as e:
                raise HostAuthError(a.name, f"{a.where}: client key {a.key_file} does not exist") from e
            except Exception as e:
                raise HostAuthError(a.name, f"{a.where}: cannot load client key {a.key_file}: {e}") from e

            client = paramiko.SSHClient()
            # Only this host's pinned key(s): no system known_hosts, unknown keys are rejected.
            for keytype, key in pinned.items():
                client.get_host_keys().add(a.known_hosts_name, keytype, key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            t0 = time.monotonic()
            sock: socket.socket | None = None
            ok = False
            try:
                try:
                    sock = socket.create_connection((a.address, a.port), timeout=self.connect_timeout)
                    # paramiko leaves Nagle on: every channel open/exec then waits for a delayed
                    # ACK (~40 ms per run() on Linux). SSH messages are whole units; send at once.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client.connect(
                        a.address,
                        port=a.port,
                        sock=sock,
                        username=a.user,
                        pkey=pkey,
                        timeout=self.connect_timeout,
                        banner_timeout=self.connect_timeout,
                        auth_timeout=self.connect_timeout,
                        channel_timeout=self.connect_timeout,
                        allow_agent=False,
                        look_for_keys=False,
                    )
                except paramiko.BadHostKeyException as e:
                    pinned_desc = ", ".join(_describe_key(k) for k in pinned.values())
                    got = _describe_key(e.key)
                    raise HostKeyMismatch(
                        a.name,
                        f"{a.where}: HOST KEY MISMATCH, refusing to connect. The host presented {got} "
                        f"but the pinned key is {pinned_desc} (from "
                        f"{a.known_hosts or 'host_key'}). Check that you use this run's known_hosts "
                        "(keys are remade every run) and that nothing else answers at this address.",
                    ) from e
                except paramiko.AuthenticationException as e:
                    raise HostAuthError(
                        a.name,
                        f"{a.where}: authentication failed for user {a.user!r} with key {a.key_file} "
                        f"({_describe_key(pkey)}): "
                        f"{e}. Check that the host's authorized_keys holds this public key, that the "
                        "user may log in with a key (PermitRootLogin for root) and that the account "
                        "is not locked.",
                    ) from e
                except (NoValidConnectionsError, socket.timeout, TimeoutError, OSError) as e:
                    raise HostUnreachable(
                        a.name,
                        f"{a.where}: cannot reach sshd ({e.__class__.__name__}: {e}). Check the "
                        "address and port, that sshd runs there, and the route to it (for emulated "
                        "hosts: the management veth).",
                    ) from e
                except paramiko.SSHException as e:
                    raise HostUnreachable(
                        a.name,
                        f"{a.where}: SSH handshake failed: {e}. Is it an SSH server, and did it "
                        f"answer within {self.connect_timeout:g}s?",
                    ) from e
                ok = True
            finally:
                if not ok:
                    client.close()
                    if sock is not None:
                        sock.close()
            transport = client.get_transport()
            if transport is not None and self.keepalive:
                transport.set_keepalive(int(self.keepalive))
            self._client = client
            log.info("connected to %s in %.3fs", a.where, time.monotonic() - t0)
            return self

    @property
    def connected(self) -> bool:
        c = self._client
        t = c.get_transport() if c is not None else None
        return t is not None and t.is_active()

    def _transport(self) -> paramiko.Transport:
        if not self.connected:
            if self._client is not None:
                raise HostUnreachable(self.name, f"{self.access.where}: connection was lost")
            self.connect()
        t = self._client.get_transport() if self._client else None
        if t is None:
            raise HostUnreachable(self.name, f"{self.access.where}: not connected")
        return t

    def close(self) -> None:
        """Close SFTP and the SSH connection. Idempotent."""
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:  # pragma: no cover - best effort
                    pass
                self._sftp = None
            if self._client is not None:
                self._client.close()
                self._client = None
                log.debug("closed connection to %s", self.access.where)

    def __enter__(self) -> "Host":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- commands -------------------------------------------------------------------------
    def command_line(
        self,
        argv: Sequence[str] | str,
        env: Mapping[str, str] | None = None,
        *,
        timeout_wrap: float | None = None,
        sudo: bool | None = None,
    ) -> str:
        """The exact string sent to the remote shell for ``argv``."""
        if isinstance(argv, str):
            inner = ["sh", "-c", argv]
        else:
            inner = [str(x) for x in argv]
            if not inner:
                raise ValueError("empty argv")
        prefix: list[str] = []
        if self.access.sudo if sudo is None else sudo:
            prefix += ["sudo", "-n"]
        if env:
            bad = [k for k in env if not _ENV_RE.match(k)]
            if bad:
                raise ValueError(f"bad environment variable names: {bad}")
            prefix += ["env", *(f"{k}={v}" for k, v in env.items())]
        if timeout_wrap is not None:
            prefix += ["timeout", "-k", "2", str(max(1, math.ceil(timeout_wrap)))]
        if not prefix and isinstance(argv, str):
            return argv
        return shlex.join(prefix + inner)

    def run(
        self,
        argv: Sequence[str] | str,
        timeout: float,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        *,
        input: bytes | str | None = None,
        kill_on_timeout: bool = True,
    ) -> Completed:
        """Run a command and wait for it, at most ``timeout`` seconds.

        ``argv``: an argv list (quoted with :func:`shlex.join`; preferred) or a shell string.
        Raises :class:`RemoteTimeout` after ``timeout`` seconds; with ``kill_on_timeout`` the
        command runs under ``timeout(1)`` on the host, which kills its process group about a
        second after our bound. Raises :class:`RemoteCommandError` on non-zero exit if ``check``.
        """
        if timeout is None or timeout <= 0:
            raise ValueError("run() needs a positive timeout")
        cmd = self.command_line(
            argv, env, timeout_wrap=(timeout + 1) if kill_on_timeout else None
        )
        return self._exec(cmd, timeout, check, input=input, killed_remotely=kill_on_timeout)

    def _exec(
        self,
        cmd: str,
        timeout: float,
        check: bool,
        *,
        input: bytes | str | None = None,
        killed_remotely: bool = False,
    ) -> Completed:
        """Send the final command string ``cmd``; see :meth:`run`."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=max(deadline - time.monotonic(), 0.001))
        except paramiko.SSHException as e:
            if time.monotonic() >= deadline:
                raise RemoteTimeout(
                    self.name, f"{self.access.where}: no session opened within {timeout:g}s for: {cmd}"
                ) from e
            raise HostUnreachable(self.name, f"{self.access.where}: cannot open a session: {e}") from e
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            # paramiko waits for the exec reply without a bound: a watchdog closes the channel
            # at the deadline, which wakes it up with "Channel closed".
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0.001), chan.close)
            watchdog.daemon = True
            watchdog.start()
            try:
                chan.exec_command(cmd)
                if input is not None:
                    chan.settimeout(max(deadline - time.monotonic(), 0.001))
                    chan.sendall(input.encode() if isinstance(input, str) else input)
                chan.shutdown_write()
            except (paramiko.SSHException, socket.timeout, OSError) as e:
                if time.monotonic() >= deadline or isinstance(e, socket.timeout):
                    raise RemoteTimeout(
                        self.name, f"{self.access.where}: command not started within {timeout:g}s: {cmd}"
                    ) from e
                raise HostUnreachable(self.name, f"{self.access.where}: cannot run {cmd}: {e}") from e
            finally:
                watchdog.cancel()
            while True:
                while chan.recv_ready():
                    out.append(chan.recv(65536))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                    if not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    so = b"".join(out).decode(errors="replace")
                    se = b"".join(err).decode(errors="replace")
                    raise RemoteTimeout(
                        self.name,
                        f"{self.access.where}: command did not finish within {timeout:g}s: "
                        f"{cmd}"
                        + (" (the host kills it via timeout(1))" if killed_remotely else "")
                        + (f"\nstderr so far: {se.strip()[-2000:]}" if se.strip() else ""),
                        so,
                        se,
                    )
                if not transport.is_active():
                    raise HostUnreachable(self.name, f"{self.access.where}: connection lost while running {cmd}")
                if chan.eof_received:
                    # output is complete; the exit status follows (the pipe stays readable now)
                    chan.status_event.wait(min(remaining, 0.05))
                else:
                    select.select([chan], [], [], min(remaining, 0.02))
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        done = Completed(
            rc=rc,
            stdout=b"".join(out).decode(errors="replace"),
            stderr=b"".join(err).decode(errors="replace"),
            command=cmd,
            duration=time.monotonic() - t0,
        )
        log.debug("%s: rc=%d in %.3fs: %s", self.name, rc, done.duration, cmd)
        if check and rc != 0:
            raise RemoteCommandError(
                self.name,
                f"{self.access.where}: command exited with status {rc}: {cmd}"
                + (f"\nstderr: {done.stderr.strip()[-2000:]}" if done.stderr.strip() else ""),
                done,
            )
        return done

    def _script(
        self, script: str, args: Sequence[str], timeout: float, *, sudo: bool | None = None
    ) -> Completed:
        """Run a POSIX sh snippet with positional arguments (never interpolated)."""
        argv = ["sh", "-c", script, "sh", *[str(a) for a in args]]
        return self._exec(self.command_line(argv, sudo=sudo), timeout, check=True)

    def start(
        self,
        argv: Sequence[str] | str,
        name: str,
        log_dir_remote: str,
        env: Mapping[str, str] | None = None,
        *,
        start_timeout: float = 15.0,
    ) -> "RemoteProcess":
        """Start ``argv`` in the background on the host and return at once.

        The process leads its own session/process group (``setsid``); its stdout/stderr go to
        ``<log_dir_remote>/<name>.out`` / ``.err``, its pid (== pgid) to ``<name>.pid`` and its
        exit status to ``<name>.rc``. A relative ``log_dir_remote`` is relative to the user's
        home directory.
        """
        if not _NAME_RE.match(name):
            raise ValueError(f"bad process name {name!r} (letters, digits, '_', '.', '-')")
        if isinstance(argv, str):
            cmd = ["sh", "-c", argv]
        else:
            cmd = [str(x) for x in argv]
            if not cmd:
                raise ValueError("empty argv")
        if env:
            bad = [k for k in env if not _ENV_RE.match(k)]
            if bad:
                raise ValueError(f"bad environment variable names: {bad}")
            cmd = ["env", *(f"{k}={v}" for k, v in env.items()), *cmd]
        res = self._script(_LAUNCH, [log_dir_remote, name, *cmd], timeout=start_timeout)
        try:
            pid = int(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise HostError(self.name, f"{self.access.where}: could not read pid of {name}: {res.stdout!r} {res.stderr!r}")
        proc = RemoteProcess(self, name=name, pid=pid, argv=cmd, log_dir=log_dir_remote.rstrip("/") or "/")
        log.info("%s: started %s (pgid %d): %s", self.name, name, pid, shlex.join(cmd))
        return proc

    def open_tcp(self, address: str, port: int, timeout: float = 10.0) -> paramiko.Channel:
        """A TCP connection that the host itself opens to ``address:port`` (SSH direct-tcpip):
        reaches a service bound to the host's own loopback. Raises :class:`HostError`."""
        try:
            return self._transport().open_channel(
                "direct-tcpip", (address, int(port)), ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, OSError) as e:
            raise HostError(self.name, f"{self.access.where}: cannot open a TCP channel to "
                            f"{address}:{port} through SSH: {e}") from e

    # ---- files ----------------------------------------------------------------------------
    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                try:
                    self._sftp = paramiko.SFTPClient.from_transport(
                        self._transport(), window_size=None, max_packet_size=None
                    )
                except paramiko.SSHException as e:
                    raise RemoteFileError(self.name, f"{self.access.where}: cannot start SFTP: {e}") from e
                self._sftp.get_channel().settimeout(self.sftp_timeout)
            return self._sftp

    def put(self, local: Path | str, remote: str, mode: int | None = None) -> None:
        """Copy a local file to the host (SFTP)."""
        with self._lock:
            try:
                sftp = self.sftp()
                sftp.put(str(local), remote, confirm=True)
                if mode is not None:
                    sftp.chmod(remote, mode)
            except (OSError, paramiko.SSHException) as e:
                raise RemoteFileError(self.name, f"{self.access.where}: put {local} -> {remote}: {e}") from e

    def get(self, remote: str, local: Path | str) -> Path:
        """Copy a file from the host (SFTP); creates the local parent folder."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            try:
                self.sftp().get(remote, str(local))
            except (OSError, paramiko.SSHException) as e:
                raise RemoteFileError(self.name, f"{self.access.where}: get {remote} -> {local}: {e}") from e
        return local

    def exists(self, remote: str) -> bool:
        with self._lock:
            try:
                self.sftp().stat(remote)
                return True
            except FileNotFoundError:
                return False
            except (OSError, paramiko.SSHException) as e:
                raise RemoteFileError(self.name, f"{self.access.where}: stat {remote}: {e}") from e


# --------------------------------------------------------------------------------------------
# RemoteProcess
# --------------------------------------------------------------------------------------------
@dataclass
class RemoteProcess:
    """A background process started by :meth:`Host.start`; ``pid`` is also its process group."""

    host: Host
    name: str
    pid: int
    argv: list[str]
    log_dir: str
    returncode: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def pgid(self) -> int:
        return self.pid

    def _path(self, suffix: str) -> str:
        return f"{self.log_dir}/{self.name}.{suffix}"

    @property
    def stdout_path(self) -> str:
        return self._path("out")

    @property
    def stderr_path(self) -> str:
        return self._path("err")

    @property
    def rc_path(self) -> str:
        return self._path("rc")

    def alive(self, timeout: float = 10.0) -> bool:
        """Is any (non-zombie) process of its process group still running?"""
        res = self.host._script(_ALIVE, [self.pid, self.rc_path], timeout=timeout)
        return res.stdout.strip() == "yes"

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s. Exit status if it finished, else None (still running, or
        gone without a status, e.g. SIGKILLed together with its wrapper)."""
        if self.returncode is not None:
            return self.returncode
        polls = max(0, math.ceil(timeout / 0.1))
        res = self.host._script(_WAIT, [self.pid, self.rc_path, polls], timeout=timeout + 10)
        word = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if word == "RUNNING":
            return None
        if word == "GONE":
            log.warning("%s: %s (pgid %d) is gone without an exit status", self.host.name, self.name, self.pid)
            return None
        try:
            self.returncode = int(word)
        except ValueError:
            raise HostError(self.host.name, f"{self.host.access.where}: unreadable status of {self.name}: {res.stdout!r}")
        return self.returncode

    def stop(self, grace: float = 3) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds. Idempotent."""
        if self._stopped:
            return
        polls = max(1, math.ceil(grace / 0.1))
        res = self.host._script(_STOP, [self.pid, self.rc_path, polls], timeout=grace + 15)
        self._stopped = True
        outcome = res.stdout.strip()
        if outcome == "KILLED":
            log.warning("%s: %s (pgid %d) ignored SIGTERM for %gs, SIGKILLed", self.host.name, self.name, self.pid, grace)
        else:
            log.info("%s: stopped %s (pgid %d)", self.host.name, self.name, self.pid)

    def fetch_logs(self, local_dir: Path | str) -> list[Path]:
        """Copy ``<name>.out``/``.err``/``.rc`` to ``local_dir/<host>.<name>.<suffix>`` (SFTP);
        files that do not exist on the host are skipped."""
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        got: list[Path] = []
        for suffix in ("out", "err", "rc"):
            remote = self._path(suffix)
            if not self.host.exists(remote):
                log.debug("%s: no %s to fetch", self.host.name, remote)
                continue
            got.append(self.host.get(remote, local_dir / f"{self.host.name}.{self.name}.{suffix}"))
        return got
