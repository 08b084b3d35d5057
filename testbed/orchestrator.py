"""Run a scenario: a traffic-load sweep over a set of SSH-driven hosts.

For each step (load x repetition x configuration): start the competing load (iperf3 UDP from
the ext node(s) to the ES), let it settle, run the head on the MD for warm-up plus N frames
against the tail on the ES, stop the load, fetch the records and the iperf3 report, and write
them into the result folder. A step that fails is recorded as failed and the sweep goes on;
every finished step is already on disk, and ``resume`` runs only the steps not yet finished.

The orchestrator only ever talks to hosts through ``Host`` (paramiko): the emulated lab and a
real lab differ only in how their host set is brought up.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from testbed import capture, traffic
from testbed.agent_client import AgentError, AgentHandle
from testbed.configs import Configuration
from testbed.devices import compute_argv, compute_manifest
from testbed.hosts.remote import Host
from testbed.hostset import HostSet
from testbed.lab import cpuset
from testbed.records import DROPPED_BUSY, RecordWriter, read_records
from testbed.resultdir import FRAMES, MANIFEST, now_utc, software_versions, write_json
from testbed.scenario import Scenario, parse_scenario, scenario_to_dict

log = logging.getLogger(__name__)

TAIL_PORT = 5500
IPERF_PORT = 5201
MIN_LOAD_S = 2.5
"""The competing load runs at least this long: iperf3 reports per one-second interval, and a
server whose client stopped before the first interval ended reports nothing received (a short
step measured 0 Mbit/s)."""
FIRST_FRAME_GRACE_S = 120.0
"""A step's first frame may wait this much longer than ``limits.frame_timeout_s`` (the agent
builds the head then)."""
PROGRESS_POLL_S = 5.0
"""How often the records of a step's other MDs are counted (the first one's: every second)."""


@dataclass(frozen=True)
class Step:
    id: str
    load_mbit: float
    repetition: int
    config: Configuration
    mds: int = 1
    """MDs streaming at once (the first ``mds`` of the cell's)."""


def plan_steps(scenario: Scenario) -> list[Step]:
    """Every step of the sweep, load-major (all configurations see the same load in turn), then
    by number of MDs when the sweep has that axis (ids ``L<load>-m<mds>-r<rep>-<config>``)."""
    counts = scenario.sweep.mds or (scenario.cell.mds,)
    return [
        Step(f"L{load:g}-{f'm{n}-' if scenario.sweep.mds else ''}r{rep}-{config.name}",
             float(load), rep, config, n)
        for load in scenario.sweep.loads_mbit
        for n in counts
        for rep in range(scenario.sweep.repetitions)
        for config in scenario.configurations
    ]


@dataclass
class Progress:
    """Callbacks for a display; the library itself only logs."""

    on_step: Callable[[int, int, Step], None] = lambda i, n, step: None
    on_frames: Callable[[Step, int, float | None], None] = lambda step, done, median: None


class Orchestrator:
    def __init__(self, scenario: Scenario, out: Path, hosts: HostSet, progress: Progress | None = None):
        self.scenario = scenario
        self.out = Path(out)
        self.hosts = hosts
        self.progress = progress or Progress()
        self.mds = scenario.by_role("md")
        """The cell's MDs (one unless ``cell.mds``); a step uses the first ``step.mds``."""
        self.md = self.mds[0]
        self.es = scenario.host("es")
        self.ext = scenario.by_role("ext")
        self.manifest: dict[str, Any] = {}
        self.agents: dict[str, AgentHandle] = {}
        """The head agent on each MD, started at the first step that needs one."""
        self._agents_started = 0

    # ------------------------------------------------------------------ manifest
    def _load_manifest(self) -> None:
        path = self.out / MANIFEST
        self.manifest = json.loads(path.read_text()) if path.exists() else {}
        self.manifest.setdefault("schema", 1)
        self.manifest.setdefault("steps", {})
        self.manifest.update(
            scenario=scenario_to_dict(self.scenario),
            run_id=self.hosts.run_id,
            versions=software_versions(),
            lab=self.hosts.manifest(),
            cpu_caps={h.name: getattr(h, "cpu", None) for h in self.scenario.members()},
            torch_threads={h.name: self._thread_count(h) for h in self.scenario.members()},
            compute=compute_manifest(self.scenario.members()),
            status="running",
        )
        self.manifest.setdefault("started", now_utc())
        self.manifest.pop("failure", None)  # a resumed folder's earlier failed start
        self._save()

    def _save(self) -> None:
        write_json(self.out / MANIFEST, self.manifest)

    # ------------------------------------------------------------------ run
    def run(self, steps: list[Step]) -> dict[str, Any]:
        self._load_manifest()
        tail = None
        stepping = False
        try:
            (self.out / "traffic").mkdir(exist_ok=True)
            (self.out / "steps").mkdir(exist_ok=True)
            for md in self.mds:
                self.hosts.host(md.name).run(["mkdir", "-p", self.hosts.workdir], timeout=10)
            tail = self._start_tail()
            self._wait_for_tail()
            stepping = True
            for i, step in enumerate(steps):
                self.progress.on_step(i, len(steps), step)
                if step.config.mode != "LC" and not tail.alive():
                    log.warning("the tail on %s died; restarting it before step %s",
                                self.es.name, step.id)
                    self._fetch_logs(tail)
                    tail = self._start_tail()
                    self._wait_for_tail()
                self._run_step(step)
            self.manifest["status"] = "complete"
        except KeyboardInterrupt:
            self.manifest["status"] = "interrupted"
            raise
        except BaseException as exc:
            if stepping:
                self.manifest["status"] = f"error: {exc}"
            else:  # no step ran
                self.manifest.update(status="failed", failure=start_failure("tail start-up", exc))
            raise
        finally:
            for name in list(self.agents):
                self._drop_agent(name)
            if tail is not None:
                tail.stop()
                self._fetch_logs(tail)
            self.manifest["finished"] = now_utc()
            self._save()
        return self.manifest

    def _argv(self, *args: str) -> list[str]:
        return [self.hosts.python, "-m", "testbed", *args]

    def _isolation(self) -> cpuset.Isolation | None:
        """The host set's CPU isolation, if it offers one (the emulated lab)."""
        return getattr(self.hosts, "isolation", None)

    def _thread_count(self, host) -> int | None:
        """Torch threads of ``host``: pinned to CPUs (``testbed.lab.cpuset``), as many as those
        CPUs, or fewer if its ``torch_threads`` says so (an emulated host's default, every core,
        would oversubscribe them); else its ``torch_threads``, else None (torch's choice)."""
        isolation = self._isolation()
        pinned = isolation.threads(host.name) if isolation else None
        if pinned is None:
            return host.torch_threads
        return min(host.torch_threads or pinned, pinned)

    def _threads(self, host) -> list[str]:
        n = self._thread_count(host)
        return ["--threads", str(n)] if n else []

    def _pinned(self, host) -> list[str]:
        """The prefix that starts a processing process on ``host``'s own CPUs ([] if none)."""
        isolation = self._isolation()
        return cpuset.join_argv(isolation, host.name) if isolation else []

    def _start_tail(self):
        es = self.hosts.host(self.es.name)
        argv = self._argv(
            "tail", "--host", self.hosts.address(self.es.name), "--port", str(TAIL_PORT),
            "--seed", str(self.scenario.seed),
            "--max-message-bytes", str(self.scenario.limits.max_message_bytes),
            *(["--max-inferences", str(self.scenario.es.workers)] if self.scenario.es.workers
              else []),
            *self._threads(self.es), *compute_argv(self.es),
            *checkpoint_argv(self.scenario.configurations),
        )
        return es.start([*self._pinned(self.es), *argv], "tail", self.hosts.workdir)

    def _wait_for_tail(self, timeout: float = 120.0) -> None:
        """Probe the tail from every MD, through the AP: proves routing before any frame."""
        probe = (
            "import socket,sys,time\n"
            "end=time.monotonic()+float(sys.argv[3])\n"
            "while True:\n"
            "    try:\n"
            "        socket.create_connection((sys.argv[1],int(sys.argv[2])),2).close(); break\n"
            "    except OSError:\n"
            "        if time.monotonic()>end: sys.exit('tail not reachable')\n"
            "        time.sleep(0.3)\n"
        )
        for md in self.mds:
            self.hosts.host(md.name).run(
                [self.hosts.python, "-c", probe, self.hosts.address(self.es.name), str(TAIL_PORT),
                 str(timeout)], timeout=timeout + 15,
            )

    def _run_step(self, step: Step) -> None:
        record: dict[str, Any] = {
            "load_asked_mbit": step.load_mbit, "repetition": step.repetition, "mds": step.mds,
            "config": step.config.name, "started": now_utc(),
        }
        self.manifest["steps"][step.id] = record
        started = time.monotonic()
        conditions = getattr(self.hosts, "step_conditions", None)
        try:
            if conditions is not None:
                record["conditions"] = conditions()
            frames_s = self._measure(step, record)
            medium = getattr(self.hosts, "step_medium", None)
            if medium is not None and (counted := medium()) is not None:
                record["medium"] = counted  # a simulated medium's counters (ns-3), its flags
            record.update(status="ok" if not record.get("failed_frames") else
                          f"ok ({record['failed_frames']} frames failed)")
            record["frames_s"] = round(frames_s, 3)
        except KeyboardInterrupt:
            record["status"] = "interrupted"
            raise
        except Exception as exc:
            log.exception("step %s failed", step.id)
            record["status"] = f"failed: {exc}"
        finally:
            record["wall_s"] = round(time.monotonic() - started, 3)
            record["finished"] = now_utc()
            record["loadavg"] = self._loadavg()
            self._save()

    def _measure(self, step: Step, record: dict[str, Any]) -> float:
        names = {"md": self.md.name, "es": self.es.name, "router": self._router()}
        with capture.step_captures(self.hosts, self.scenario.packet_capture, self.manifest["lab"],
                                   names, step.id, self.out, TAIL_PORT, record,
                                   networked=step.config.mode != "LC",
                                   repetition=step.repetition):
            load = self._start_load(step)
            load_started = time.monotonic()
            try:
                if load:
                    time.sleep(self.scenario.sweep.settle_s)
                frames_s = self._run_head(step, record)
            finally:
                if load:  # a load stopped before iperf3's first interval ends reports nothing
                    time.sleep(max(0.0, MIN_LOAD_S - (time.monotonic() - load_started)))
                achieved = self._stop_load(step, load, record)
        self._collect(step, achieved)
        return frames_s

    def _router(self) -> str:
        routers = self.scenario.by_role("ap") or self.scenario.by_role("enb")
        return routers[0].name if routers else ""

    # ------------------------------------------------------------------ competing load
    def _start_load(self, step: Step) -> list[tuple[Any, Any]]:
        if not traffic.needs_traffic(step.load_mbit) or not self.ext:
            return []
        es = self.hosts.host(self.es.name)
        es_addr = self.hosts.address(self.es.name)
        frames = self.scenario.frames + self.scenario.warmup
        bound = traffic.load_duration_s(FIRST_FRAME_GRACE_S + frames * self._frame_timeout,
                                        self.scenario.sweep.settle_s)
        pairs = []
        share = step.load_mbit / len(self.ext)
        for k, ext in enumerate(self.ext):
            port = IPERF_PORT + k
            server = es.start(traffic.server_argv(es_addr, port, idle_timeout_s=bound),
                              f"iperf3-server-{ext.name}", self.hosts.workdir)
            self._wait_listening(es, port)
            client = self.hosts.host(ext.name).start(
                traffic.client_argv(es_addr, share, bound, port=port,
                                    length=self.scenario.sweep.packet_bytes,
                                    reverse=self.scenario.sweep.direction == "downlink"),
                f"iperf3-client-{ext.name}", self.hosts.workdir)
            pairs.append((server, client))
        return pairs

    @staticmethod
    def _wait_listening(host: Host, port: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = host.run(["ss", "-Htln", f"sport = :{port}"], timeout=10, check=False)
            if out.stdout.strip():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{host.name}: iperf3 server not listening on port {port} after {timeout} s")

    def _stop_load(self, step: Step, pairs, record: dict[str, Any]) -> float:
        if not pairs:
            record["load_achieved_mbit"] = 0.0
            return 0.0
        achieved = 0.0
        reports = {}
        for server, client in pairs:
            client.stop()  # SIGTERM: the server then reports what it received until now
            server.wait(15)
            server.stop()
            out = self._read_remote(server.host, server.stdout_path)
            try:
                report = traffic.parse_report(out, stopped_by_client=True)
                achieved += report.achieved_mbit
                reports[server.name] = report.raw
            except traffic.IperfError as exc:
                reports[server.name] = {"error": str(exc), "output": out[:2000]}
                raise RuntimeError(f"competing load: {exc}") from exc
            finally:
                write_json(self.out / "traffic" / f"{step.id}.json", reports)
        achieved = round(achieved, 3)
        record["load_achieved_mbit"] = achieved
        record["load_error_pct"] = round(100 * (achieved - step.load_mbit) / step.load_mbit, 1)
        return achieved

    @staticmethod
    def _read_remote(host: Host, path: str) -> str:
        return host.run(["cat", path], timeout=30, check=False).stdout

    # ------------------------------------------------------------------ frames
    def _step_file(self, step: Step, md) -> str:
        """A step's records file name on ``md``: ``<step>.csv``, in a cell ``<step>.<md>.csv``
        (the emulated hosts share one file system)."""
        return f"{step.id}.csv" if len(self.mds) == 1 else f"{step.id}.{md.name}.csv"

    def _records_path(self, step: Step, md) -> str:
        return f"{self.hosts.workdir}/{self._step_file(step, md)}"

    def _head_argv(self, step: Step, md) -> list[str]:
        """``testbed head``'s arguments for one step on ``md`` (what its agent runs). The MDs
        of a cell are copies of one md entry: they share its torch threads."""
        argv = [
            "--config-json", json.dumps(step.config.to_dict()),
            "--frames", str(self.scenario.frames), "--warmup", str(self.scenario.warmup),
            "--images", str(self.scenario.images), "--records", self._records_path(step, md),
            *self._threads(self.md), "--seed", str(self.scenario.seed),
            "--run-id", self.hosts.run_id, "--step", step.id, "--load", f"{step.load_mbit:g}",
            "--repetition", str(step.repetition), *compute_argv(md), "--md-name", md.name,
            "--busy-policy", self.scenario.cell.busy_policy,
        ]
        if self.scenario.cell.deadline_ms is not None:
            argv += ["--deadline-ms", f"{self.scenario.cell.deadline_ms:g}"]
        if step.config.mode != "LC":
            argv += ["--connect", f"{self.hosts.address(self.es.name)}:{TAIL_PORT}"]
        if self.scenario.capture_rate_hz:
            argv += ["--capture-rate", str(self.scenario.capture_rate_hz)]
        return argv

    def _head_agent(self, md) -> AgentHandle:
        """``md``'s head agent: the one already up if it still answers, else a new one."""
        agent = self.agents.get(md.name)
        if agent is not None:
            try:
                agent.ping()
                return agent
            except (AgentError, ValueError) as exc:
                log.warning("the head agent %s is gone (%s); starting a new one", agent.name, exc)
                self._drop_agent(md.name)
        self._agents_started += 1
        agent = AgentHandle.start(self.hosts.host(md.name), self.hosts.python,
                                  self.hosts.workdir, f"{md.name}-agent-{self._agents_started}",
                                  prefix=self._pinned(md))
        self.agents[md.name] = agent
        return agent

    def _drop_agent(self, name: str) -> None:
        """Stop MD ``name``'s head agent (if any) and keep its logs; its next step starts a new
        one."""
        agent = self.agents.pop(name, None)
        if agent is not None:
            agent.stop()
            self._fetch_logs(agent.process)

    def _run_head(self, step: Step, record: dict[str, Any]) -> float:
        """The step on its ``step.mds`` MDs at once, one agent each; progress from the first."""
        mds = self.mds[:step.mds]
        for md in mds:
            self.hosts.host(md.name).run(["rm", "-f", self._records_path(step, md)], timeout=10)
        agents = {md.name: self._head_agent(md) for md in mds}
        total = self.scenario.frames + self.scenario.warmup
        started = time.monotonic()
        deadline = started + FIRST_FRAME_GRACE_S + total * self._frame_timeout
        first, first_remote = self.hosts.host(mds[0].name), self._records_path(step, mds[0])
        done: dict[str, Any] = {}

        def run(md) -> None:
            progress = ((lambda: self._report_frames(step, first, first_remote))
                        if md is mds[0] else self._counter(step, md))
            try:
                done[md.name] = agents[md.name].run_step(
                    step.id, self._head_argv(step, md), deadline, progress,
                    stall_s=self._frame_timeout, first_grace_s=FIRST_FRAME_GRACE_S)
            except (AgentError, ValueError) as exc:  # died, hung, or answered nonsense
                done[md.name] = exc

        threads = [threading.Thread(target=run, args=(md,), name=f"step-{md.name}") for md in mds]
        for t in threads:
            t.start()
        for t in threads:  # run_step itself ends by the deadline
            t.join(max(0.0, deadline - time.monotonic()) + 30)
        self._report_frames(step, first, first_remote)
        errors = []
        for md in mds:
            result = done.get(md.name)
            if result is None or isinstance(result, Exception):
                self._drop_agent(md.name)
                errors.append(f"{md.name}: head agent: {result or 'no answer by the deadline'}")
            elif result.error:
                errors.append(f"{md.name}: head could not run the step: {result.error}")
        if errors:
            raise RuntimeError("; ".join(errors))
        return time.monotonic() - started

    @property
    def _frame_timeout(self) -> float:
        return self.scenario.limits.frame_timeout_s

    def _report_frames(self, step: Step, md: Host, remote: str) -> int:
        """Show the step's progress from ``md``'s records; the frames recorded so far."""
        text = self._read_remote(md, remote)
        rows = list(csv.DictReader(text.splitlines()))
        totals = [float(r["total"]) for r in rows if r.get("warmup") == "False" and r.get("total")]
        self.progress.on_frames(step, len(rows), statistics.median(totals) if totals else None)
        return len(rows)

    def _counter(self, step: Step, md) -> Callable[[], int | None]:
        """Frames recorded so far by one of a step's other MDs, counted every
        ``PROGRESS_POLL_S`` (the last count in between)."""
        host, remote = self.hosts.host(md.name), self._records_path(step, md)
        rows: int | None = None
        read_at = -PROGRESS_POLL_S

        def count() -> int | None:
            nonlocal rows, read_at
            if time.monotonic() - read_at >= PROGRESS_POLL_S:
                lines = self._read_remote(host, remote).splitlines()
                rows, read_at = max(0, len(lines) - 1), time.monotonic()  # after the header
            return rows
        return count

    def _collect(self, step: Step, achieved: float) -> None:
        """Fetch the step's records from each of its MDs, keep them raw, and add them to
        frames.csv. Frames an MD dropped (busy) are recorded, not failed."""
        expected = self.scenario.frames + self.scenario.warmup
        records = []
        failed = dropped = 0
        for md in self.mds[:step.mds]:
            raw = self.out / "steps" / self._step_file(step, md)
            self.hosts.host(md.name).get(self._records_path(step, md), raw)
            mine = list(read_records(raw))
            dropped += sum(r.status == DROPPED_BUSY for r in mine)
            failed += sum(r.status not in ("ok", DROPPED_BUSY) for r in mine)
            failed += max(0, expected - len(mine))
            for r in mine:
                r.md = r.md or md.name
            records += mine
        self.manifest["steps"][step.id].update(frames=len(records), failed_frames=failed,
                                               dropped_frames=dropped, mds=step.mds)
        with RecordWriter(self.out / FRAMES) as writer:
            for r in records:
                r.load_achieved_mbit = achieved
                writer.write(r)

    # ------------------------------------------------------------------ misc
    def _loadavg(self) -> dict[str, Any]:
        out = {}
        for h in self.scenario.members():
            try:
                text = self.hosts.host(h.name).run(["cat", "/proc/loadavg"], timeout=10).stdout
                one = float(text.split()[0])
                cores = int(self.hosts.host(h.name).run(["nproc"], timeout=10).stdout.strip())
                out[h.name] = {"load1": one, "cores": cores, "saturated": one > cores}
            except Exception as exc:  # informational only
                out[h.name] = {"error": str(exc)}
        return out

    def _fetch_logs(self, proc) -> None:
        try:
            proc.fetch_logs(self.out / "logs")
        except Exception as exc:
            log.warning("could not fetch logs of %s: %s", proc.name, exc)


# ---------------------------------------------------------------------- a run that never stepped


def checkpoint_argv(configs: list[Configuration]) -> list[str]:
    """``--checkpoint PATH`` for each checkpoint the configurations name: the only files the
    tail will load when a head's Hello asks for them."""
    paths = sorted({c.weights for c in configs if c.weights})
    return [arg for path in paths for arg in ("--checkpoint", path)]


def start_failure(stage: str, error: BaseException | str, fix: str = "") -> dict[str, str]:
    """The manifest's ``failure`` of a run that ended before its first step: where, why, and
    (when known) the one-line fix."""
    reason = error if isinstance(error, str) else (str(error) or type(error).__name__)
    return {"stage": stage, "reason": reason, "fix": fix}


def record_unstarted(out: Path, scenario: Scenario, run_id: str, *, status: str,
                     failure: dict[str, str], lab: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the manifest of a run that ended before its first step (pre-flight, lab start-up,
    Ctrl-C): the keys of a run's manifest that are known by then, ``status`` (``failed`` or
    ``interrupted``) and ``failure``. A resumed folder keeps its steps."""
    path = Path(out) / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest.setdefault("schema", 1)
    manifest.setdefault("steps", {})
    manifest.update(scenario=scenario_to_dict(scenario), run_id=run_id,
                    versions=software_versions(), status=status, failure=failure)
    if lab is not None:
        manifest["lab"] = lab
    manifest.setdefault("started", now_utc())
    manifest["finished"] = now_utc()
    write_json(path, manifest)
    return manifest


# ---------------------------------------------------------------------- resume


def finished_steps(out: Path) -> set[str]:
    manifest = json.loads((Path(out) / MANIFEST).read_text())
    return {k for k, v in manifest.get("steps", {}).items() if str(v.get("status", "")).startswith("ok")}


def scenario_of(out: Path) -> Scenario:
    """The scenario a result folder was made with (as loaded then)."""
    path = Path(out) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{out} has no {MANIFEST}: not a result folder")
    raw = json.loads(path.read_text())["scenario"]
    for host in raw.get("hosts") or []:
        # folders made before the AP had a backend key ran it as a namespace (the default now
        # is auto): resume them the way they ran
        if isinstance(host, dict) and host.get("role") in ("ap", "enb"):
            host.setdefault("backend", "namespace")
    return parse_scenario(raw, source=str(path))


def keep_finished_frames(out: Path, finished: set[str]) -> None:
    """Drop rows of unfinished steps from frames.csv (an interrupted step may have left some)."""
    path = Path(out) / FRAMES
    if not path.exists():
        return
    rows = [r for r in read_records(path) if r.step in finished]
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with RecordWriter(tmp) as writer:
        for r in rows:
            writer.write(r)
    os.replace(tmp, path)
