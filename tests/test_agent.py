"""The head agent: control messages, steps on cached heads, and sweeps driven through it.

Without root: the protocol's checks, and a real ``testbed agent`` process on loopback running
steps of two configurations against a real tail (heads built once). As root: ``testbed run`` on
the emulated lab with an agent killed mid-step (its step failed, a new agent runs the next ones,
building each head once), then Ctrl-C mid-step; and SIGKILL followed by ``testbed clean
--run-id``. Nothing may be left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed import agent_protocol as proto
from testbed.agent import HeadAgent, _serve_connection
from testbed.lab.cpuset import AP_PROCESSES, plan_isolation, usable_cpus
from testbed.lab.netns import owned_namespaces
from testbed.lab.runs import host_workdir
from testbed.records import read_records
from testbed.tail import TailServer, TailSettings

from tests.childproc import restore_sigint

EC = {"name": "ec", "mode": "EC", "model": "mobilenet_v2"}
SC = {"name": "sc", "mode": "SC", "model": "mobilenet_v2", "split": "features.6"}
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the emulated lab needs root (network namespaces)")


# ---------------------------------------------------------------------- protocol


@pytest.mark.parametrize("line, says", [
    (b"not json\n", "not JSON"),
    (b"[1]\n", "expected a JSON object"),
    (b'{"op": "exec"}\n', "field 'op': expected one of hello, ping, step, quit, got 'exec'"),
    (b'{"op": "step", "id": "a"}\n', "step: missing field(s) ['argv']"),
    (b'{"op": "step", "id": "a", "argv": [], "x": 1}\n', "step: unknown field(s) ['x']"),
    (b'{"op": "step", "id": "a", "argv": [1]}\n', "step: field 'argv': expected a list of strings"),
    (b'{"op": "step", "id": "../x", "argv": []}\n', "step: field 'id'"),
    (b'{"op": "hello", "token": 5}\n', "hello: field 'token': expected a string, got int"),
    (b'{"op": "done", "id": "a"}\n', "expected one of hello"),  # a reply is not a request
])
def test_bad_control_lines_are_refused_naming_the_field(line, says):
    with pytest.raises(proto.ProtocolError, match=None) as err:
        proto.decode(line, proto.REQUESTS)
    assert says in str(err.value)


def test_messages_round_trip():
    done = proto.Done(id="L0-r0-ec", frames=4, failed_frames=1, error=None, built=True,
                      prepare_s=0.5, step_s=2.0)
    assert proto.decode(proto.encode(done), proto.REPLIES) == done
    step = proto.Step("L0-r0-ec", ("--frames", "3"))
    assert proto.decode(proto.encode(step), proto.REQUESTS) == step


def test_the_first_request_must_carry_the_token():
    a, b = socket.socketpair()
    with a, b:
        server = threading.Thread(target=_serve_connection, args=(a, "right", HeadAgent()))
        server.start()
        b.sendall(proto.encode(proto.Ping()))
        reply = proto.decode(b.makefile("rb").readline(), proto.REPLIES)
        server.join(10)
        assert isinstance(reply, proto.Refused) and "token" in reply.error
        assert not server.is_alive()  # the agent stops serving it (serve() then closes it)
    a, b = socket.socketpair()
    with a, b:
        server = threading.Thread(target=_serve_connection, args=(a, "right", HeadAgent()))
        server.start()
        b.sendall(proto.encode(proto.Hello("wrong")))
        assert isinstance(proto.decode(b.makefile("rb").readline(), proto.REPLIES), proto.Refused)
        server.join(10)
        assert not server.is_alive()


# ---------------------------------------------------------------------- a real agent process


def test_agent_runs_steps_of_two_configurations_building_each_head_once(tmp_path):
    tail = TailServer(TailSettings(host="127.0.0.1", port=0, seed=0))
    threading.Thread(target=tail.serve_forever, daemon=True).start()
    control = tmp_path / "agent.ctl"
    err = open(tmp_path / "agent.err", "w")
    agent = subprocess.Popen([sys.executable, "-m", "testbed", "agent", "--control", str(control),
                              "--accept-timeout", "60"], stderr=err)
    try:
        deadline = time.monotonic() + 120
        while not control.exists():
            assert agent.poll() is None and time.monotonic() < deadline, "agent did not listen"
            time.sleep(0.1)
        assert control.stat().st_mode & 0o077 == 0, "the token file is for the agent's user only"
        port, token = proto.read_control(control.read_text(), str(control))
        conn = socket.create_connection(("127.0.0.1", port), timeout=120)
        lines = conn.makefile("rb")

        def ask(msg):
            conn.sendall(proto.encode(msg))
            return proto.decode(lines.readline(), proto.REPLIES)

        assert ask(proto.Hello(token)) == proto.Welcome(pid=agent.pid, version=proto.VERSION)
        done = []
        for i, config in enumerate([EC, SC, EC, SC]):
            argv = ["--config-json", json.dumps(config), "--frames", "3", "--warmup", "1",
                    "--records", str(tmp_path / f"s{i}.csv"), "--step", f"s{i}",
                    "--connect", f"127.0.0.1:{tail.address[1]}"]
            done.append(ask(proto.Step(f"s{i}", tuple(argv))))
        assert [d.error for d in done] == [None] * 4
        assert [d.built for d in done] == [True, True, False, False]
        assert [(d.frames, d.failed_frames) for d in done] == [(4, 0)] * 4
        records = list(read_records(tmp_path / "s3.csv"))
        assert [r.warmup for r in records] == [True, False, False, False]
        assert {(r.step, r.config, r.status) for r in records} == {("s3", "sc", "ok")}
        bad = ask(proto.Step("bad", ("--frames", "x")))
        assert bad.error == "argument --frames: invalid int value: 'x'" and bad.frames == 0
        assert ask(proto.Ping()) == proto.Pong(prepared=2)  # the bad step built nothing
        assert ask(proto.Quit()) == proto.Bye()
        assert agent.wait(30) == 0
        assert not control.exists()
        conn.close()
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait()
        err.close()
        tail.shutdown()
    log = (tmp_path / "agent.err").read_text()
    assert log.count("built the MD side") == 2 and log.count("reusing the MD side") == 2


# ---------------------------------------------------------------------- sweeps (root)

SCENARIO = """\
name: agent-test
link: {{kind: wifi, preset: wifi-80211g}}
hosts:
  - {{name: md, role: md}}
  - {{name: es, role: es}}
  - {{name: ap, role: ap, backend: namespace}}
sweep: {{loads_mbit: [0], repetitions: {reps}, settle_s: 0.2}}
model: mobilenet_v2
configurations:
  - {{name: ec, mode: EC, model: mobilenet_v2}}
  - {{name: lc, mode: LC, model: mnasnet0_5}}
frames: {frames}
warmup: 1
capture_rate_hz: 5
{extra}"""


def _start_run(tmp_path: Path, reps: int, frames: int, extra: str = "") -> subprocess.Popen:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(reps=reps, frames=frames, extra=extra))
    return subprocess.Popen([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                             str(tmp_path / "results")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _agent_pids(run_id: str) -> list[int]:
    """The run's head agents' python processes (not the wrapper shells that launched them)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        argv = _cmdline(pid).split(" ")
        if argv[1:4] == ["-m", "testbed", "agent"] and any(
                a.startswith(host_workdir(run_id) + "/") for a in argv):
            found.append(int(pid))
    return found


def _agent_logs(out: Path) -> list[Path]:
    """The MD's head agents' stderr logs, in the order they were started."""
    logs = [p for p in (out / "logs").glob("md.*agent-*.err")]
    return sorted(logs, key=lambda p: int(p.name.rsplit("-", 1)[1].split(".")[0]))


def _wait_for_frames(tmp_path: Path, proc: subprocess.Popen, step: str,
                     rows: int = 3) -> tuple[Path, str]:
    """The result folder and run id once ``step``'s records on the MD have ``rows`` rows."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for out in (tmp_path / "results").glob("*"):
            try:
                run_id = json.loads((out / "manifest.json").read_text())["run_id"]
                text = Path(host_workdir(run_id), f"{step}.csv").read_text()
            except (OSError, ValueError, KeyError):
                continue
            if len(text.splitlines()) > rows:
                return out, run_id
        time.sleep(0.1)
    raise AssertionError(f"no frames of {step} within 240 s")


def _leftovers(run_id: str) -> list[str]:
    found = [f"namespace {n}" for n in owned_namespaces(run_id)]
    found += [f"process {p}: {_cmdline(p)[:100]}" for p in os.listdir("/proc")
              if p.isdigit() and run_id in _cmdline(p)]
    if os.path.exists(host_workdir(run_id)):
        found.append(f"folder {host_workdir(run_id)}")
    return found


@needs_root
def test_a_killed_agent_fails_its_step_a_new_one_runs_on_and_ctrl_c_leaves_nothing(tmp_path):
    proc = _start_run(tmp_path, reps=3, frames=12)
    try:
        out, run_id = _wait_for_frames(tmp_path, proc, "L0-r0-ec")
        (victim,) = _agent_pids(run_id)
        os.kill(victim, signal.SIGKILL)
        _wait_for_frames(tmp_path, proc, "L0-r2-ec")  # agent 2 has run three steps
        (second_pid,) = _agent_pids(run_id)
        assert second_pid != victim
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    steps = {k: v["status"] for k, v in manifest["steps"].items()}
    killed = steps.pop("L0-r0-ec")
    assert killed.startswith("failed: ") and "head agent" in killed, killed
    assert "closed its control stream (it died)" in killed
    assert steps.pop("L0-r2-ec") == "interrupted"
    assert steps == {k: "ok" for k in ("L0-r0-lc", "L0-r1-ec", "L0-r1-lc")}, err[-3000:]
    first, second_log = _agent_logs(out)  # two agents, no third
    assert first.with_suffix(".rc").read_text().strip() == "137"  # SIGKILL
    second = second_log.read_text()
    # four steps of two configurations on agent 2: each head built once, then reused
    assert second.count("built the MD side") == 2, second
    assert second.count("reusing the MD side") == 2, second
    records = list(read_records(out / "frames.csv"))
    assert {r.step for r in records} == set(steps)
    assert len(records) == 3 * 13 and all(r.status == "ok" for r in records)
    isolation = manifest["lab"]["cpu_isolation"]
    ap_process = AP_PROCESSES.get(manifest["lab"]["backend"]["backend"])
    assert isolation["reason"] == plan_isolation(usable_cpus(), ["md"], "es",
                                                 ap_process=ap_process).reason
    assert isolation["applied"] == isolation["possible"]
    assert _leftovers(run_id) == []


@needs_root
def test_a_hung_agent_fails_its_step_by_the_frame_timeout_and_a_new_one_runs_on(tmp_path):
    proc = _start_run(tmp_path, reps=2, frames=12, extra="limits: {frame_timeout_s: 6}\n")
    try:
        out, run_id = _wait_for_frames(tmp_path, proc, "L0-r0-ec")
        (victim,) = _agent_pids(run_id)
        os.kill(victim, signal.SIGSTOP)  # alive, holding its connection, silent
        stopped = time.monotonic()
        _wait_for_frames(tmp_path, proc, "L0-r0-lc")  # the next step, on a new agent
        waited = time.monotonic() - stopped
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 6 < waited < 100, waited  # the frame timeout, not the step's whole deadline (198 s)
    manifest = json.loads((out / "manifest.json").read_text())
    steps = {k: v["status"] for k, v in manifest["steps"].items()}
    hung = steps.pop("L0-r0-ec")
    assert hung.startswith("failed: ") and "recorded no frame of step L0-r0-ec" in hung, hung
    assert "limits.frame_timeout_s = 6 s" in hung, hung
    assert steps == {k: "ok" for k in ("L0-r0-lc", "L0-r1-ec", "L0-r1-lc")}, err[-3000:]
    first, _ = _agent_logs(out)
    assert first.with_suffix(".rc").read_text().strip() == "137"  # SIGKILLed while stopped
    # the sweep went on and finished; its failed step is listed and sets the exit status
    assert proc.returncode == 1 and "step L0-r0-ec: failed: " in err, err[-2000:]
    assert _leftovers(run_id) == []


@needs_root
def test_sigkill_then_clean_leaves_no_agent_behind(tmp_path):
    proc = _start_run(tmp_path, reps=1, frames=400)
    try:
        out, run_id = _wait_for_frames(tmp_path, proc, "L0-r0-ec")
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _agent_pids(run_id), "the agent outlives a SIGKILLed run until its step ends"
    clean = subprocess.run([sys.executable, "-m", "testbed", "clean", "--run-id", run_id],
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert _leftovers(run_id) == []
