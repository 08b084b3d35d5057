"""The orchestrator's side of a head agent (``testbed.agent``): start it, talk to it, stop it.

:meth:`AgentHandle.start` starts ``testbed agent`` on the MD with :meth:`Host.start` (so it has a
process group, logs and an exit status like every remote process, and runs in the MD's
namespace and cgroups), waits for its control file, opens a TCP channel to its port through
the MD's SSH connection and greets it with the file's token. :meth:`AgentHandle.run_step` sends
one step and waits for its ``done``, calling ``on_wait`` about once a second (progress) and
raising :class:`AgentGone` if the agent's stream ends (it died) or :class:`AgentTimeout` past
the deadline; after either the caller stops this agent and starts a new one for the next step.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence

import paramiko

from testbed import agent_protocol as proto
from testbed.hosts.remote import Host, HostError, RemoteProcess

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
"""Python start-up and the torch import of a fresh agent, on a slow or loaded MD."""
REPLY_TIMEOUT_S = 10.0
POLL_S = 1.0


class AgentError(RuntimeError):
    """The agent could not be started or answered something it should not have."""


class AgentGone(AgentError):
    """The agent's control stream ended: the process died (crashed, killed)."""


class AgentTimeout(AgentError, TimeoutError):
    """The agent did not answer in time (a step that hangs)."""


class AgentHandle:
    def __init__(self, process: RemoteProcess, channel: paramiko.Channel):
        self.process = process
        self.channel = channel
        self._buffer = b""
        self._in_step = False

    @property
    def name(self) -> str:
        return self.process.name

    @classmethod
    def start(cls, host: Host, python: str, workdir: str, name: str,
              timeout: float = START_TIMEOUT_S, prefix: Sequence[str] = ()) -> "AgentHandle":
        """Start ``testbed agent`` (after ``prefix``: e.g. joining a cpuset) and greet it."""
        control = f"{workdir}/{name}.ctl"
        host.run(["rm", "-f", control], timeout=10)
        process = host.start([*prefix, python, "-m", "testbed", "agent", "--control", control,
                              "--accept-timeout", str(int(timeout))], name, workdir)
        try:
            port, token = cls._wait_control(host, process, control, timeout)
            channel = host.open_tcp("127.0.0.1", port)
            agent = cls(process, channel)
            welcome = agent._ask(proto.Hello(token), time.monotonic() + REPLY_TIMEOUT_S)
            if not isinstance(welcome, proto.Welcome):
                raise AgentError(f"{name} answered hello with {type(welcome).__name__}")
        except BaseException:
            process.stop()
            raise
        log.info("%s: head agent %s ready (pid %d, protocol %d)", host.name, name, welcome.pid,
                 welcome.version)
        return agent

    @staticmethod
    def _wait_control(host: Host, process: RemoteProcess, control: str,
                      timeout: float) -> tuple[int, str]:
        end = time.monotonic() + timeout
        while True:
            got = host.run(["cat", control], timeout=10, check=False)
            if got.ok and got.stdout.strip():
                try:
                    return proto.read_control(got.stdout, f"{host.name}:{control}")
                except ValueError:
                    pass  # written as we read it? it is renamed into place whole: retry once more
            if process.wait(0.3) is not None or not process.alive():
                err = host.run(["tail", "-n", "5", process.stderr_path], timeout=10, check=False)
                last = err.stdout.strip().splitlines()
                raise AgentGone(f"the head agent {process.name} exited before it listened: "
                                f"{last[-1] if last else 'no output'}")
            if time.monotonic() > end:
                raise AgentTimeout(f"the head agent {process.name} wrote no control file in "
                                   f"{timeout:.0f} s")

    # ------------------------------------------------------------------ messages
    def _send(self, msg: proto.Message) -> None:
        try:
            self.channel.settimeout(REPLY_TIMEOUT_S)
            self.channel.sendall(proto.encode(msg))
        except (OSError, socket.timeout, paramiko.SSHException) as exc:
            raise AgentGone(f"cannot send to the head agent {self.name}: {exc}") from exc

    def _line(self, until: float) -> bytes | None:
        """The next line, or None if none came by ``until``; AgentGone at end of stream."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > proto.MAX_LINE_BYTES:
                raise AgentError(f"the head agent {self.name} sent a line longer than "
                                 f"{proto.MAX_LINE_BYTES} bytes")
            left = until - time.monotonic()
            if left <= 0:
                return None
            self.channel.settimeout(min(left, POLL_S))
            try:
                chunk = self.channel.recv(65536)
            except socket.timeout:
                continue
            except (OSError, paramiko.SSHException) as exc:
                raise AgentGone(f"the head agent {self.name}'s channel failed: {exc}") from exc
            if not chunk:
                raise AgentGone(f"the head agent {self.name} closed its control stream (it died)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _ask(self, msg: proto.Message, until: float) -> proto.Message:
        self._send(msg)
        line = self._line(until)
        if line is None:
            raise AgentTimeout(f"the head agent {self.name} did not answer {type(msg).__name__}")
        reply = proto.decode(line, proto.REPLIES)
        if isinstance(reply, proto.Refused):
            raise AgentError(f"the head agent {self.name} refused {type(msg).__name__}: {reply.error}")
        return reply

    # ------------------------------------------------------------------ API
    def ping(self) -> int:
        """Heads the agent keeps; raises AgentError (AgentGone: dead) if it does not answer."""
        reply = self._ask(proto.Ping(), time.monotonic() + REPLY_TIMEOUT_S)
        if not isinstance(reply, proto.Pong):
            raise AgentError(f"the head agent {self.name} answered ping with {type(reply).__name__}")
        return reply.prepared

    def run_step(self, step_id: str, argv: Sequence[str], deadline: float,
                 progress: Callable[[], int | None], stall_s: float | None = None,
                 first_grace_s: float = 0.0) -> proto.Done:
        """Run one step (``testbed head``'s arguments) and return the agent's ``done``.

        ``progress()`` is called about once a second while the step runs and returns the frames
        recorded so far (None: not known). With ``stall_s``, a count that stays the same for
        that long (``first_grace_s`` longer before the first frame) means the agent is hung:
        AgentTimeout, as when ``deadline`` passes."""
        self._send(proto.Step(step_id, tuple(argv)))
        self._in_step = True
        seen, since = None, time.monotonic()
        while True:
            line = self._line(min(deadline, time.monotonic() + POLL_S))
            if line is not None:
                break
            count, now = progress(), time.monotonic()
            if count != seen:
                seen, since = count, now
            elif stall_s is not None and now - since > stall_s + (0 if seen else first_grace_s):
                raise AgentTimeout(f"the head agent {self.name} recorded no frame of step "
                                   f"{step_id} for {now - since:.0f} s (hung; limit "
                                   f"limits.frame_timeout_s = {stall_s:g} s)")
            if now > deadline:
                raise AgentTimeout(f"the head agent {self.name} did not finish step {step_id} "
                                   "in time")
        self._in_step = False
        reply = proto.decode(line, proto.REPLIES)
        if not isinstance(reply, proto.Done) or reply.id != step_id:
            raise AgentError(f"the head agent {self.name} answered step {step_id} with {reply}")
        return reply

    def stop(self) -> None:
        """Ask the agent to quit (unless a step is under way: Ctrl-C, a hung step), then stop
        its process group (SIGTERM, SIGKILL). Idempotent."""
        try:
            if not self.channel.closed and not self._in_step:
                self._ask(proto.Quit(), time.monotonic() + 3)
        except (AgentError, proto.ProtocolError) as exc:
            log.debug("%s: quit: %s", self.name, exc)
        finally:
            self.channel.close()
            try:
                self.process.stop()
            except HostError as exc:
                log.warning("could not stop the head agent %s: %s", self.name, exc)
