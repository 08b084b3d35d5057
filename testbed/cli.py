"""``testbed``: the command line. Only this module prints; the library logs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from testbed import __version__, head_args
from testbed.devices import compute_argument

DESCRIPTION = """\
Split DNN inference latency testbed (Head Network Distillation, Section V).

A mobile device (MD) runs the head of a DNN, an edge server (ES) runs the tail; the testbed
measures each frame's capture-to-output delay and its parts (md_proc, comm, es_proc) over
emulated or real links, under competing traffic.
"""

EPILOG = """\
examples:
  testbed run scenarios/quickstart.yaml     a load sweep on the emulated lab (root)
  testbed run --resume results/<run>        finish an interrupted sweep
  testbed demo                              five Table 5 configurations over loopback
  testbed tail --host 0.0.0.0 --port 5500   serve tails on an edge server
  testbed head --connect 198.19.0.2:5500 --configuration mimic-bottleneck --records frames.csv
  testbed models densenet201                split points and their output sizes

Each subcommand has its own --help.
"""


def cmd_tail(args) -> int:
    from testbed.tail import TailServer, TailSettings

    try:
        settings = TailSettings(host=args.host, port=args.port, max_message_bytes=args.max_message_bytes,
                                idle_timeout_s=args.idle_timeout, message_timeout_s=args.message_timeout,
                                max_connections=args.max_connections, max_inferences=args.max_inferences,
                                seed=args.seed, threads=args.threads, compute=args.compute,
                                checkpoints=tuple(args.checkpoint), max_models=args.max_models)
    except ValueError as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return 2
    server = TailServer(settings)
    print(f"tail listening on {settings.host}:{server.address[1]} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def cmd_head(args) -> int:
    from testbed.head import HeadError, run_head

    settings = head_args.head_settings(args)
    try:
        failed = run_head(settings, args.records)
    except (HeadError, ValueError, OSError) as exc:  # could not start: bad weights, images, tail
        print(f"head: {exc}", file=sys.stderr)
        return 2
    print(f"{args.frames + args.warmup - failed} frames ok, {failed} failed -> {args.records}")
    return 1 if failed else 0


def cmd_agent(args) -> int:
    from testbed.agent import serve

    return serve(Path(args.control), accept_timeout_s=args.accept_timeout)


def cmd_demo(args) -> int:
    from tqdm import tqdm

    from analysis.summary import format_summary_table, summarize
    from testbed.configs import table5
    from testbed.demo import run_demo
    from testbed.records import read_records
    from testbed.resultdir import FRAMES

    table = table5(args.model, args.n_ch)
    unknown = [c for c in args.configs if c not in table]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; choose from {', '.join(table)}")
    configs = [table[c] for c in args.configs]
    bar = tqdm(total=len(configs) * (args.frames + args.warmup), unit="frame", dynamic_ncols=True,
               disable=None)

    def on_config(config):
        if bar.disable:  # not a terminal: one plain line per configuration
            print(f"{config.name}: {args.warmup} warm-up + {args.frames} frames", file=sys.stderr, flush=True)
        bar.set_description(config.name)

    def on_frame(record):
        bar.update(1)
        if record.total is not None:
            bar.set_postfix_str(f"total {record.total * 1e3:.0f} ms")

    out = run_demo(configs, args.frames, args.warmup, Path(args.results), images=args.images,
                   threads=args.threads, seed=args.seed, on_frame=on_frame, on_config=on_config,
                   md_compute=args.md_compute, es_compute=args.es_compute)
    bar.close()
    print(format_summary_table(summarize(read_records(out / FRAMES))))
    print(f"\nresults: {out}")
    return 0


def cmd_models(args) -> int:
    from testbed.models import catalog

    if not args.model:
        for name, info in catalog.MODELS.items():
            student = "yes" if info.has_student else "no"
            print(f"{name:14s} input {info.input_size}px  student head: {student:3s}  "
                  f"split points: {', '.join(info.split_points)}")
        return 0
    from testbed.models.teachers import describe_splits

    if args.model not in catalog.MODELS:
        raise SystemExit(f"unknown model {args.model!r}; choose from {', '.join(catalog.MODELS)}")
    print(f"{'#':>2}  {'split point':14s} {'output shape':18s} {'elements':>10s}  vs input")
    for i, row in enumerate(describe_splits(args.model), 1):
        shape = "x".join(str(d) for d in row.shape)
        print(f"{i:>2}  {row.name:14s} {shape:18s} {row.elements:>10d}  {row.relative:.3f}")
    return 0


def cmd_validate(args) -> int:
    from testbed.scenario import ScenarioError, load_scenario

    status = 0
    for path in args.scenarios:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            print(exc, file=sys.stderr)
            status = 2
            continue
        for warning in scenario.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{path}: ok ({len(scenario.configurations)} configurations x "
              f"{len(scenario.sweep.loads_mbit)} loads x {scenario.sweep.repetitions} repetitions)")
    return status


def cmd_run(args) -> int:
    from tqdm import tqdm

    from testbed import traffic
    from testbed.emulated import EmulatedHosts
    from testbed.lab import preflight
    from testbed.lab.capabilities import detect
    from testbed.lab.names import new_run_id
    from testbed.orchestrator import (Orchestrator, Progress, finished_steps, keep_finished_frames,
                                      plan_steps, record_unstarted, scenario_of, start_failure)
    from testbed.resultdir import FRAMES, MANIFEST, new_result_dir
    from testbed.scenario import ScenarioError, load_scenario

    try:
        if args.resume:
            out = Path(args.resume)
            scenario = scenario_of(out)
            done = finished_steps(out)
            keep_finished_frames(out, done)
        else:
            if not args.scenario:
                raise SystemExit("give a SCENARIO file, or --resume RESULT_DIR")
            scenario = load_scenario(args.scenario)
            done = set()
    except (ScenarioError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    steps = [s for s in plan_steps(scenario) if s.id not in done]
    if not args.resume:
        writable = preflight.results_dir(args.results)
        if not writable.available:
            print(f"cannot write results: {writable.detail}\nfix: {writable.fix}", file=sys.stderr)
            return 2
        out = new_result_dir(args.results, scenario.name)
    if not steps:
        print(f"nothing to do: every step of {out} is finished")
        return 0
    frames_per_step = scenario.frames + scenario.warmup
    step_bar = tqdm(total=len(steps), unit="step", position=0, dynamic_ncols=True, disable=None)
    frame_bar = tqdm(total=frames_per_step, unit="frame", position=1, dynamic_ncols=True, leave=False,
                     disable=None)

    def on_step(i, n, step):
        if step_bar.disable:  # not a terminal (a log file, a pipe): one plain line per step
            print(f"step {i + 1}/{n}: {step.config.name} @ {step.load_mbit:g} Mbit/s", file=sys.stderr,
                  flush=True)
        step_bar.n = i
        step_bar.set_description(f"{step.config.name} @ {step.load_mbit:g} Mbit/s")
        step_bar.refresh()
        frame_bar.reset(total=frames_per_step)

    def on_frames(step, done_frames, median):
        frame_bar.n = done_frames
        if median is not None:
            frame_bar.set_postfix_str(f"median total {median * 1e3:.0f} ms")
        frame_bar.refresh()

    print(f"results: {out}")
    run_id = new_run_id()
    if scenario.emulated:
        host_set = lambda: EmulatedHosts(scenario, out, run_id)  # noqa: E731
        lab_errors: tuple[type[BaseException], ...] = ()
    else:  # a real lab: the inventory's hosts over SSH, the link brought up by the testbed
        from testbed.hosts.remote import HostError
        from testbed.realhosts import InventoryError, RealHosts, RealLabError

        host_set = lambda: RealHosts(scenario, out, run_id)  # noqa: E731
        lab_errors = (InventoryError, RealLabError, HostError)
    stage, hosts = "pre-flight", None
    try:
        try:
            hosts = host_set()
            backend = getattr(hosts, "choice", {}).get("backend")
            preflight.require(detect(probe_network=False), preflight.needed(
                emulated=scenario.emulated, backend=backend,
                needs_load=bool(scenario.by_role("ext"))
                and any(traffic.needs_traffic(s.load_mbit) for s in steps)))
            stage = "lab start-up"
            if backend == "vm" and hosts.lab.image is None:
                # build (or find) the AP VM's image before the lab starts, with bars below the steps
                hosts.lab.image = _build_vm_image(position=2, leave=False, messages=False)
            with hosts:
                stage = "steps"  # from here the orchestrator keeps the manifest
                manifest = Orchestrator(scenario, out, hosts, Progress(on_step, on_frames)).run(steps)
        except BaseException as exc:
            if stage != "steps":  # no step ran: the result folder says why
                interrupted = isinstance(exc, KeyboardInterrupt)
                try:
                    record_unstarted(
                        out, scenario, run_id, status="interrupted" if interrupted else "failed",
                        failure=start_failure(stage, "interrupted (SIGINT)" if interrupted else exc,
                                              getattr(exc, "fix", "")),
                        lab={"backend": hosts.choice} if hasattr(hosts, "choice") else None)
                except OSError as err:  # the run's own error is what to report
                    logging.getLogger("testbed").warning("cannot write %s: %s", out / MANIFEST, err)
            raise
    except preflight.PreflightError as exc:
        frame_bar.close()
        step_bar.close()
        print("\nthis machine cannot run it (nothing was started):", file=sys.stderr)
        for check in exc.failed:
            print(f"  {check.name}: {check.detail}\n    fix: {check.fix}", file=sys.stderr)
        print(f"(`testbed doctor` checks everything; recorded in {out / MANIFEST})", file=sys.stderr)
        return 2
    except lab_errors as exc:
        frame_bar.close()
        step_bar.close()
        print(f"\nthe real lab could not be used (everything started is torn down):\n{exc}\n"
              f"check the hosts with: testbed lab check {args.scenario or ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        frame_bar.close()
        step_bar.close()
        print(f"\ninterrupted; the lab is torn down. Finished steps are kept; continue with:\n"
              f"  testbed run --resume {out}", file=sys.stderr)
        return 130
    except Exception as exc:  # bring-up or teardown failed: everything made is already removed
        frame_bar.close()
        step_bar.close()
        logging.getLogger("testbed").info("run failed", exc_info=True)
        print(f"\nthe run failed: {exc}\n(-v shows the trace; `testbed doctor` checks this "
              f"machine; finished steps, if any, are in {out})", file=sys.stderr)
        return 2
    step_bar.n = len(steps)
    frame_bar.close()
    step_bar.close()
    failed = {k: v["status"] for k, v in manifest["steps"].items() if not v["status"].startswith("ok")}
    if (out / FRAMES).exists():
        _print_summary(out, scenario.frames)
    for step, status in failed.items():
        print(f"step {step}: {status}", file=sys.stderr)
    print(f"\nresults: {out}")
    return 1 if failed else 0


def _print_summary(out: Path, frames_per_step: int) -> None:
    """The run's table with its flagged cells marked, then one line: how many, and where to read why."""
    from analysis.cellflags import REASONS, flag_cells
    from analysis.load import load_results
    from analysis.summary import format_summary_table, summarize
    from testbed.records import read_records
    from testbed.resultdir import FRAMES

    summaries = summarize(read_records(out / FRAMES))
    flagged = flag_cells(load_results(out), frames_per_step)
    print(format_summary_table(summaries, marks={(f.config, f.load): f.detail for f in flagged}))
    if not flagged:
        print(f"no cell flagged ({len(summaries)} cells)")
        return
    kinds = sorted({k for f in flagged for k in f.flags})
    for kind in kinds:
        print(f"  {kind}: {REASONS[kind]}")
    print(f"{len(flagged)} of {len(summaries)} cells flagged ({', '.join(kinds)}); why, step by step: "
          f"testbed report {out} (tables/ and report/report.html), or the steps in {out / 'manifest.json'}")


def _lab_scenario(path: str):
    from testbed.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return None
    for warning in scenario.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if scenario.emulated:
        print(f"{path}: lab: expected a real lab (lab.hosts); this scenario is emulated "
              "(`testbed run` builds it on this machine)", file=sys.stderr)
        return None
    return scenario


def cmd_lab_check(args) -> int:
    from testbed.labcheck import failed, format_check_table, run_checks

    scenario = _lab_scenario(args.scenario)
    if scenario is None:
        return 2
    rows = run_checks(scenario, args.host or (), connect_timeout=args.connect_timeout)
    print(format_check_table(rows))
    bad = failed(rows)
    print(f"\n{'NOT ready' if bad else 'ready'}: {sum(r.status == 'FAIL' for r in rows)} failed, "
          f"{sum(r.status == 'warn' for r in rows)} warnings")
    return 1 if bad else 0


def cmd_lab_deploy(args) -> int:
    from testbed.deploy import deploy
    from testbed.inventory import InventoryError
    from testbed.labcheck import failed, format_check_table

    scenario = _lab_scenario(args.scenario)
    if scenario is None:
        return 2
    try:
        rows = deploy(scenario, args.host or (), no_deps=args.no_deps,
                      system_site_packages=args.system_site_packages,
                      base_python=args.base_python, pip_args=args.pip_arg or ())
    except (InventoryError, RuntimeError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_check_table(rows))
    return 1 if failed(rows) else 0


def cmd_profile(args) -> int:
    from testbed.profile import DEFAULT_MODELS, profile_host, summary_lines, write_profile

    def on_config(model, config):
        print(f"timing {model} {config.name} ...", file=sys.stderr, flush=True)

    try:
        data = profile_host(args.models or list(DEFAULT_MODELS), n=args.frames, warmup=args.warmup,
                            threads=args.threads, images=args.images, configs=args.configs,
                            n_ch=args.n_ch, seed=args.seed, on_config=on_config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 2
    out = write_profile(data, args.out or f"results/profile-{data['device']['key']}.json")
    print("\n".join(summary_lines(data)))
    print(f"\nprofile: {out}  (use it with `testbed report --profile {out}`)")
    return 0


def cmd_report(args) -> int:
    from analysis.load import ResultFolderError
    from analysis.profiles import ProfileError
    from analysis.report import write_report

    try:
        files = write_report(args.result_dirs, args.out, labels=args.labels, profile=args.profile,
                             payloads=args.payloads, loads=args.loads,
                             analytic=not args.no_analytic)
    except (ResultFolderError, ProfileError, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    print(f"report:  {files.html}")
    print(f"figures: {files.html.parent / 'figures'} ({len(files.figures)} figures, PNG and PDF)")
    print(f"tables:  {files.html.parent / 'tables'} ({len(files.tables)} files)")
    return 0


def cmd_doctor(args) -> int:
    from testbed.emulated import default_radios
    from testbed.lab.backends import choose as choose_backend
    from testbed.lab import preflight
    from testbed.lab import cpuset
    from testbed.lab.capabilities import detect

    caps = detect()
    checks = {c.name: c for c in [*caps, *preflight.doctor_checks(args.results)]}
    for cap in checks.values():
        mark = "ok " if cap.available else "-- "
        print(f"{mark} {cap.name:16s} {cap.detail}")
        if not cap.available and cap.fix:
            print(f"    {'':16s} fix: {cap.fix}")
    choice = choose_backend("auto", caps)
    print(f"\naccess point with `backend: auto` (the default): {choice['backend']} "
          f"({choice['reason']})")
    for warning in choice["warnings"]:
        print(f"    warning: {warning}")
    if choice["backend"] == "vm":
        on, why = default_radios(choice["accel"])
        print(f"WiFi links in the VM, `hwsim` unset: {'on' if on else 'off'} ({why})")
    isolation = cpuset.describe_here(["md"], "es", cpuset.AP_PROCESSES.get(choice["backend"]))
    print(f"CPU isolation of real processing (md, es; `cpu_isolation: true`, the default): "
          f"{isolation}")
    missing = [name for name in [*preflight.needed(emulated=True, backend=choice["backend"],
                                                   needs_load=True), "results_dir"]
               if not checks[name].available]
    print(f"\n`testbed run` of an emulated lab here: "
          + (f"NOT ready (fix {', '.join(missing)} above)" if missing else "ready"))
    return 1 if missing else 0


def cmd_clean(args) -> int:
    from testbed.lab import names
    from testbed.lab.backends import clean

    if args.run_id is not None:
        try:
            names.check_run_id(args.run_id)
        except ValueError as exc:
            print(f"testbed clean: --run-id: {exc} (the id is in the result folder's "
                  f"manifest.json, key run_id)", file=sys.stderr)
            return 2
    removed = clean(dry_run=args.dry_run, include_live=args.all, run_id=args.run_id)
    verb = "would remove" if args.dry_run else "removed"
    for item in removed:
        print(f"{verb} {item}")
    if not removed:
        print("nothing left behind by the testbed")
    return 0


def _build_vm_image(*, position: int = 0, leave: bool = True, messages: bool = True, **kw):
    """:func:`testbed.vm.build.build_image` with a tqdm bar per stage (packages downloaded and
    unpacked, tools smoke-tested); its messages are printed above the bars, or only logged."""
    from tqdm import tqdm

    from testbed.vm.build import build_image

    current: dict[str, tqdm] = {}  # the open bar, by stage; closed when its stage is done

    def close() -> None:
        for bar in current.values():
            bar.close()
        current.clear()

    def on_stage(p) -> None:
        bar = current.get(p.stage)
        if bar is None:
            close()
            bar = current[p.stage] = tqdm(
                total=p.total, initial=p.done, desc=p.stage,
                bar_format="{desc:<10} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                           "[{elapsed}<{remaining}{postfix}]",
                position=position, leave=leave, dynamic_ncols=True, disable=None)
        bar.n = p.done
        bar.set_postfix_str(p.item, refresh=False)
        bar.refresh()
        if p.done >= p.total:
            close()

    try:
        return build_image(progress=tqdm.write if messages else None, on_stage=on_stage, **kw)
    finally:
        close()


def cmd_vm_build(args) -> int:
    from testbed.vm.build import BuildError

    try:
        image = _build_vm_image(force=args.force, verify=args.verify)
    except BuildError as exc:
        print(f"vm build: {exc}", file=sys.stderr)
        return 2
    m = image.manifest
    print(f"kernel {m['kernel_version']}  {image.kernel}\ninitrd {image.initrd}")
    for name, digest in m["sha256"].items():
        print(f"sha256 {name} {digest}")
    return 0


def cmd_vm_check(args) -> int:
    from testbed.lab.names import new_run_id
    from testbed.vm import shaping
    from testbed.vm.boot import VmError
    from testbed.vm.build import BuildError, build_image
    from testbed.vm.pair import es_address, vm_pair

    if os.geteuid() != 0:
        print("vm check needs root (namespaces, taps)", file=sys.stderr)
        return 2
    run_id = new_run_id()
    try:
        image = build_image(progress=print)
        with vm_pair(image, run_id, Path(args.workdir) / f"vm-{run_id}", progress=print) as vm:
            print(vm.run("uname -r; grep -c . /proc/modules").stdout.strip())
            if args.fidelity:
                rows = shaping.fidelity_rows(vm, f"tb-{run_id}-md", f"tb-{run_id}-es", es_address(),
                                             count=args.count)
                print(shaping.format_rows(rows))
    except (BuildError, VmError) as exc:
        print(f"vm check: {exc}", file=sys.stderr)
        return 1
    print("vm check: ok (VM powered off, taps and namespaces removed)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"testbed {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: log progress (INFO), -vv: debug")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("tail", help="serve tails (the ES side)",
                       description="Serve EC and SC configurations to any number of MDs over TCP.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5500, help="TCP port (default 5500)")
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                   help="largest frame accepted; larger ones close the connection (default 16 MiB)")
    p.add_argument("--idle-timeout", type=float, default=900.0,
                   help="drop a connection silent between messages for this many seconds (default 900)")
    p.add_argument("--message-timeout", type=float, default=20.0,
                   help="a message (Hello: from connect) must arrive within this many seconds of its "
                   "first byte, else Error TIMEOUT and close (default 20)")
    p.add_argument("--max-connections", type=int, default=64,
                   help="connections served at once; one more gets Error BUSY and is closed (default 64)")
    p.add_argument("--max-inferences", type=int,
                   help="frames decoded and run through the model at once (default: the usable cores)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (must match the head)")
    p.add_argument("--compute", type=compute_argument, default=None, metavar="PROFILE",
                   help="this ES's compute model: 'real' (default) or a device profile (shipped "
                        "name or file) whose ES times it replays (README: Emulated devices)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="a checkpoint a head's configuration may name as its weights (repeat for "
                        "several); a Hello naming any other file is refused")
    p.add_argument("--max-models", type=int, default=8,
                   help="configurations kept built at once; the least recently requested is "
                        "dropped beyond (default 8)")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("head", help="stream frames to a tail (the MD side)",
                       description="Capture frames, run the head, stream to the ES, record each frame.")
    head_args.add_head_arguments(p)
    p.set_defaults(func=cmd_head)

    p = sub.add_parser("agent", help="a head agent: runs a sweep's steps on the MD (started by "
                       "testbed run)",
                       description="Serve step commands (JSON lines) on 127.0.0.1 of this host; "
                       "build each configuration's head once. The port and token go to --control.")
    p.add_argument("--control", required=True, help="control file to write (port, token), mode 0600")
    p.add_argument("--accept-timeout", type=float, default=120.0,
                   help="exit if no controller connects within this many seconds (default 120)")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("demo", help="the five Table 5 configurations over loopback",
                       description="Start a tail process on 127.0.0.1, run each configuration's "
                       "head against it, write a result folder and print a summary table.")
    from testbed.configs import TABLE5_NAMES

    p.add_argument("--model", default="densenet201")
    p.add_argument("--n-ch", type=int, default=12, help="bottleneck channels (default 12)")
    p.add_argument("--configs", nargs="+", default=list(TABLE5_NAMES), metavar="NAME",
                   help=f"configurations (default: all of {', '.join(TABLE5_NAMES)})")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--images", default="builtin")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default="results", help="folder for result folders")
    p.add_argument("--md-compute", type=compute_argument, default=None, metavar="PROFILE",
                   help="the head replays this device profile's MD times (default: real)")
    p.add_argument("--es-compute", type=compute_argument, default=None, metavar="PROFILE",
                   help="the tail replays this device profile's ES times (default: real)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="models and their split points",
                       description="Without MODEL: every model and its split points. With MODEL: "
                       "each split point's output shape and size relative to the input "
                       "(the data of the paper's Figures 3 and 5).")
    p.add_argument("model", nargs="?")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("validate", help="check scenario files without running anything",
                       description="Load and validate scenario files; print every problem with "
                       "its file, key path and what was expected.")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a scenario's traffic-load sweep (emulated lab as root, "
                       "or a real lab's inventory)",
                       description="Bring the emulated lab up (namespaces, shaped medium, one sshd "
                       "per host) or a real lab's link (wired, hostapd WiFi, srsRAN LTE, over SSH "
                       "to the inventory's hosts), run every step (load x repetition x configuration) over SSH, "
                       "write results/<UTC time>-<scenario>/ and tear everything down, also on "
                       "error and Ctrl-C.")
    p.add_argument("scenario", nargs="?", metavar="SCENARIO", help="scenario YAML file")
    p.add_argument("--resume", metavar="RESULT_DIR", help="run only the unfinished steps of RESULT_DIR")
    p.add_argument("--results", default="results", help="folder for result folders (default results)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("lab", help="real labs: check the inventory's hosts, deploy the testbed",
                       description="Real labs (a scenario with lab.hosts): `lab check` tests every "
                       "host over SSH, `lab deploy` installs this code on them. `testbed run` "
                       "then runs the scenario over the real link.")
    lab = p.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)
    q = lab.add_parser("check", help="is every host ready? (table; exit status 1 if not)",
                       description="For every host, over SSH: reachability and authentication, "
                       "sudo, Python and testbed versions, the tools its role needs (hostapd, "
                       "wpa_supplicant, iw, srsepc/srsenb/srsue, iperf3), its interfaces and its "
                       "clock offset to this machine (informational).")
    q.add_argument("scenario", metavar="SCENARIO")
    q.add_argument("--host", action="append", metavar="NAME", help="only this host (repeatable)")
    q.add_argument("--connect-timeout", type=float, default=10.0, help="seconds (default 10)")
    q.set_defaults(func=cmd_lab_check)
    q = lab.add_parser("deploy", help="build the wheel and install it on the lab's hosts",
                       description="Build this project's wheel, copy it over SFTP and install it "
                       "into the virtual environment of each host's inventory python "
                       "(<venv>/bin/python; created if missing). Default hosts: the MD and the ES.")
    q.add_argument("scenario", metavar="SCENARIO")
    q.add_argument("--host", action="append", metavar="NAME", help="only this host (repeatable)")
    q.add_argument("--no-deps", action="store_true",
                   help="install only the testbed (its dependencies are already there)")
    q.add_argument("--system-site-packages", action="store_true",
                   help="a new venv sees the host's system packages (e.g. a Jetson's torch)")
    q.add_argument("--base-python", default="python3",
                   help="interpreter on the hosts that creates a missing venv (default python3)")
    q.add_argument("--pip-arg", action="append", metavar="ARG",
                   help="extra pip install argument, e.g. --pip-arg=--index-url=URL (repeatable)")
    q.set_defaults(func=cmd_lab_deploy)

    p = sub.add_parser("profile", help="time each model's full, head and tail parts on this host",
                       description="Time the MD part (head) and ES part (tail) of every Table 5 "
                       "configuration of each model on this host, no network (median of N frames "
                       "after warm-up), and write a device profile JSON with every frame's time: "
                       "a scenario host replays it (compute: FILE; README: Emulated devices), "
                       "`testbed report --profile` reads its split shares.")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="models to time (default: densenet201 mobilenet_v2)")
    p.add_argument("--configs", nargs="+", metavar="NAME",
                   help="only these Table 5 configurations (default: every one the model can run)")
    p.add_argument("--frames", type=int, default=10, help="measured frames, median of these (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed frames first (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a weak MD)")
    p.add_argument("--n-ch", type=int, default=12, help="bottleneck channels (default 12)")
    p.add_argument("--images", default="builtin")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE",
                   help="profile JSON to write (default results/profile-host-<hostname>.json)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("report", help="HTML report, Table 5 tables and figures of result folders",
                       description="Read result folders (no network, root or model needed) and write "
                       "one self-contained HTML report with the figures and tables beside it; "
                       "several folders are compared side by side.")
    p.add_argument("result_dirs", nargs="+", metavar="RESULT_DIR")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default RESULT_DIR/report; with several, compare-A-vs-B "
                   "beside the first)")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="run names (default: folder names)")
    p.add_argument("--loads", nargs="+", metavar="LOAD",
                   help="loads (Mbit/s) of the time-series and CDF figures (default: all)")
    p.add_argument("--profile", metavar="FILE",
                   help="a `testbed profile` JSON: its split shares for the analytic figures")
    p.add_argument("--payloads", choices=["paper", "measured"], default="paper",
                   help="analytic payloads: Table 4 of the paper, or the runs' bytes on the wire")
    p.add_argument("--no-analytic", action="store_true", help="leave out the analytic section")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("doctor", help="what this machine can emulate, and what to install",
                       description="Probe kernel and tools: namespaces, veth, netem, tbf, htb, ifb, "
                       "u32/mirred, CPU cgroups, sshd, iperf3, hostapd, QEMU/KVM; and what a run "
                       "needs before it starts: `ip netns exec`, a writable results folder, "
                       "/dev/net/tun. Exit status 1 if an emulated run could not start here.")
    p.add_argument("--results", default="results", help="folder for result folders (default results)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("clean", help="remove what a killed run left behind",
                       description="Remove namespaces, interfaces, ifb devices, cgroups, AP "
                       "VMs and processes whose names carry the testbed's prefix, and the per-run "
                       "keys and work folder of a run that died; nothing else. Runs whose owner "
                       "process is alive are skipped.")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--all", action="store_true", help="also runs whose owner process is alive")
    p.add_argument("--run-id", metavar="ID", help="only this run (6 hex digits, the result "
                   "folder manifest's run_id), even if its owner is alive")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("vm", help="the access point as a QEMU VM (real netem on any kernel)",
                       description="Build and check the AP VM: Debian's kernel and a busybox "
                       "initramfs with iproute2, iperf3, ethtool and dropbear, cached in "
                       "/var/cache/testbed/vm/<key of package versions>/.")
    vm_sub = p.add_subparsers(dest="vm_command", metavar="VM_COMMAND", required=True)
    q = vm_sub.add_parser("build", help="build (or find cached) the VM's kernel + initramfs (root)")
    q.add_argument("--force", action="store_true", help="rebuild even if cached")
    q.add_argument("--verify", action="store_true", help="re-check the cached files' sha256")
    q.set_defaults(func=cmd_vm_build)
    q = vm_sub.add_parser("check", help="boot the VM between two namespaces, SSH in, tear down (root)")
    q.add_argument("--fidelity", action="store_true",
                   help="also measure 10,092 B / 75 KB transfers at 3 and 24 Mbit/s vs the floor")
    q.add_argument("--count", type=int, default=15, help="messages per size (default 15)")
    q.add_argument("--workdir", default="/run/testbed", help="folder for keys, logs (default /run/testbed)")
    q.set_defaults(func=cmd_vm_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background by a shell, which leaves SIGINT ignored: Ctrl-C / kill -INT
        # must still stop a run and tear its lab down (KeyboardInterrupt), however it was started
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    quiet = logging.INFO if args.command in ("tail", "agent") else logging.WARNING  # services log
    logging.basicConfig(
        level=(quiet, logging.INFO, logging.DEBUG)[min(args.verbose, 2)] if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return args.func(args)
