"""``testbed lab deploy``: install exactly this code on the lab's hosts.

1. Build the project's wheel on the controller (``pip wheel --no-deps`` of a clean copy of the
   project's sources, so the work tree is not touched; ``python -m build`` is not needed).
2. For every host that runs testbed code (the MD and the ES, or the hosts named with
   ``--host``): copy the wheel over SFTP, create the virtual environment its inventory
   ``python`` lives in (``<venv>/bin/python``) if it does not exist, and install the wheel there.
   Dependencies (torch, torchvision... with the pins of ``pyproject.toml``) come from the host's
   package index; ``no_deps`` installs only the testbed (dependencies already present, e.g. a
   Jetson's NVIDIA torch through ``system_site_packages``).
3. Write ``<venv>/hnd-testbed-deploy.json`` (version, wheel sha256, time) and check
   ``<python> -m testbed --version`` on the host.

Hosts on one machine with one venv are installed once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from testbed import __version__
from testbed.hosts.remote import Host, HostError
from testbed.inventory import InventoryError, access_for
from testbed.lab_section import LabHost
from testbed.labcheck import FAIL, OK, Check
from testbed.realnode import Node
from testbed.scenario import Scenario

log = logging.getLogger(__name__)

VENV_PYTHON_RE = re.compile(r"^(?P<venv>(/|~/).+)/bin/python[0-9.]*$")
MARKER = "hnd-testbed-deploy.json"
SOURCES = ("pyproject.toml", "README.md", "testbed", "analysis")


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str
    version: str


def project_root() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{root} has no pyproject.toml: `testbed lab deploy` builds the "
                                "wheel from a checkout of the project (run it from one)")
    return root


def build_wheel(out_dir: Path, root: Path | None = None, *, timeout: float = 600) -> Wheel:
    """Build the project's wheel into ``out_dir`` from a clean copy of its sources."""
    root = root or project_root()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="testbed-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            p = root / name
            if p.is_dir():
                shutil.copytree(p, src / name, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", "*.egg-info"))
            elif p.is_file():
                shutil.copy2(p, src / name)
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q",
                "-w", str(out_dir), str(src)]
        if importlib.util.find_spec("setuptools") is not None:
            argv.insert(4, "--no-build-isolation")  # the backend is here: no index needed
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"building the wheel failed ({' '.join(argv)}):\n"
                               f"{(proc.stderr or proc.stdout).strip()[-3000:]}")
    wheels = sorted(out_dir.glob("hnd_testbed-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip wheel wrote no hnd_testbed wheel into {out_dir}")
    wheel = wheels[-1]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return Wheel(wheel, digest, wheel.name.split("-")[1])


def venv_of(h: LabHost) -> str:
    """The virtual environment a host's ``python`` belongs to (``<venv>/bin/python``)."""
    m = VENV_PYTHON_RE.match(h.python)
    if not m:
        raise InventoryError([
            f"lab host {h.name}: python is {h.python!r}: deploy installs into a virtual "
            "environment, so python must be its interpreter, e.g. ~/hnd-testbed/venv/bin/python "
            "(absolute, or under ~/)"])
    return m.group("venv")


def deploy_host(h: LabHost, wheel: Wheel, *, system_site_packages: bool = False,
                no_deps: bool = False, base_python: str = "python3",
                pip_args: Sequence[str] = (), connect_timeout: float = 10.0,
                pip_timeout: float = 3600) -> list[Check]:
    rows: list[Check] = []

    def add(check: str, status: str, detail: str) -> None:
        rows.append(Check(h.name, h.role, check, status, detail))

    try:
        venv = venv_of(h)
        host = Host(access_for(h), connect_timeout=connect_timeout)
        host.connect()
    except (InventoryError, HostError, ValueError) as exc:
        add("deploy", FAIL, str(exc))
        return rows
    node = Node(h, host)
    try:
        t0 = time.monotonic()
        if venv.startswith("~/"):
            home = host.run(["sh", "-c", 'echo "$HOME"'], timeout=10).stdout.strip()
            venv = f"{home}/{venv[2:]}"
        python = f"{venv}/bin/python"
        remote_dir = f"/tmp/hnd-testbed-deploy-{wheel.sha256[:12]}"
        host.run(["mkdir", "-p", remote_dir], timeout=15)
        remote_wheel = f"{remote_dir}/{wheel.path.name}"
        host.put(wheel.path, remote_wheel, mode=0o644)
        made = host.run(["test", "-x", python], timeout=10, check=False).rc != 0
        if made:
            argv = [base_python, "-m", "venv"]
            if system_site_packages:
                argv.append("--system-site-packages")
                # the base's own pip serves the venv then: no second copy to bootstrap
                if host.run([base_python, "-m", "pip", "--version"], timeout=60,
                            check=False).rc == 0:
                    argv.append("--without-pip")
            host.run(argv + [venv], timeout=300)
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *pip_args]
        if not no_deps:
            host.run(pip + [remote_wheel], timeout=pip_timeout)
        host.run(pip + ["--no-deps", "--force-reinstall", remote_wheel], timeout=600)
        marker = {"version": wheel.version, "sha256": wheel.sha256, "wheel": wheel.path.name,
                  "deployed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "no_deps": no_deps, "system_site_packages": system_site_packages}
        node.put_text(json.dumps(marker, indent=1) + "\n", f"{venv}/{MARKER}", mode=0o644)
        version = host.run([python, "-m", "testbed", "--version"], timeout=120).stdout.strip()
        host.run(["rm", "-rf", remote_dir], timeout=30, check=False)
        ok = version == f"testbed {wheel.version}"
        add("deploy", OK if ok else FAIL,
            f"{'created' if made else 'updated'} {venv}: {version or 'no version'} "
            f"(wheel {wheel.path.name}, sha256 {wheel.sha256[:12]}"
            f"{', no deps' if no_deps else ''}) in {time.monotonic() - t0:.1f} s")
    except HostError as exc:
        add("deploy", FAIL, str(exc))
    finally:
        host.close()
    return rows


def targets(scenario: Scenario, hosts: Sequence[str] = ()) -> list[LabHost]:
    """The hosts to install on: ``hosts`` by name, or every MD and ES; one per machine+venv."""
    names = {h.name for h in scenario.lab.hosts}
    unknown = [n for n in hosts if n not in names]
    if unknown:
        raise InventoryError([f"{scenario.source}: no lab host named {', '.join(unknown)} "
                              f"(have {', '.join(sorted(names))})"])
    chosen = [h for h in scenario.lab.hosts
              if (h.name in hosts if hosts else h.role in ("md", "es"))]
    seen: set[tuple[str, int, str]] = set()
    out = []
    for h in chosen:
        key = (h.address, h.port, h.python)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


def deploy(scenario: Scenario, hosts: Sequence[str] = (), *, wheel: Wheel | None = None,
           work: Path | None = None, **options) -> list[Check]:
    """Build (unless ``wheel`` is given) and install on every target host."""
    if scenario.emulated:
        raise InventoryError([f"{scenario.source}: lab: deploy needs a real lab (lab.hosts)"])
    chosen = targets(scenario, hosts)
    with tempfile.TemporaryDirectory(prefix="testbed-deploy-") as tmp:
        if wheel is None:
            wheel = build_wheel(Path(work or tmp))
        log.info("deploying %s (sha256 %s) to %s", wheel.path.name, wheel.sha256[:12],
                 ", ".join(h.name for h in chosen))
        rows: list[Check] = []
        for h in chosen:
            rows.extend(deploy_host(h, wheel, **options))
    return rows


__all__ = ["Wheel", "build_wheel", "deploy", "deploy_host", "targets", "venv_of", "__version__"]
