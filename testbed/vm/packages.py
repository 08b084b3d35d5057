"""Debian packages for the AP VM's image: candidate versions (``apt-cache``), download into the
cache (``apt-get download``), unpack into a scratch folder (``dpkg -x``); nothing is installed on
the host. Also the build's error and progress types, which these steps report with.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

KERNEL_META = "linux-image-amd64"
PACKAGES = ("busybox-static", "iproute2", "iperf3", "ethtool", "dropbear-bin", "iw", "hostapd",
            "wpasupplicant", "wireless-regdb")


class BuildError(RuntimeError):
    pass


#: the stages of :func:`build_image`, in order (a cached image stops after the first)
STAGES = ("resolve", "download", "unpack", "assemble", "smoke test", "initrd")
#: ``apt-get download`` runs in at most this many batches: few runs of apt, yet a moving count
DOWNLOAD_BATCHES = 10


@dataclass(frozen=True)
class BuildProgress:
    """Where :func:`build_image` is: ``done`` of ``total`` items of ``stage`` (one of :data:`STAGES`).

    ``item``: what was just handled (a package, a tool), empty when a stage starts. Download and
    unpack count packages (download counts those already in the cache as done), the smoke test
    counts tools, the other stages count 0 then 1.
    """

    stage: str
    done: int
    total: int
    item: str = ""


OnStage = Callable[[BuildProgress], None]


def no_progress(_: BuildProgress) -> None:
    pass


def counted_stage(stage: str, names: Iterable[str], on_stage: OnStage) -> Iterator[str]:
    """Yield ``names``, reporting each one done when the caller asks for the next."""
    names = list(names)
    on_stage(BuildProgress(stage, 0, len(names)))
    for i, name in enumerate(names, 1):
        yield name
        on_stage(BuildProgress(stage, i, len(names), name))


@contextlib.contextmanager
def one_step_stage(stage: str, on_stage: OnStage):
    """A stage without items: 0 of 1 as it starts, 1 of 1 when it ends without an error."""
    on_stage(BuildProgress(stage, 0, 1))
    yield
    on_stage(BuildProgress(stage, 1, 1))


def run_tool(argv: list[str], *, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run a host tool of the build (bounded); ``BuildError`` if it is missing or hangs."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        proc = subprocess.run(argv, timeout=timeout, **kw)
    except FileNotFoundError as e:
        raise BuildError(f"{argv[0]} not found: install it on the host ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"{' '.join(argv[:4])}... did not finish within {timeout:g}s") from e
    return proc


def _parse_stanzas(text: str) -> list[dict[str, str]]:
    out, cur, last = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, last = {}, None
        elif line[0] in " \t" and last:
            cur[last] += "\n" + line
        elif ":" in line:
            k, _, v = line.partition(":")
            cur[k] = v.strip()
            last = k
    if cur:
        out.append(cur)
    return out


def _dep_names(field: str) -> list[str]:
    """Package names of a Depends field (first alternative of each, no versions or :any)."""
    names = []
    for group in filter(None, (g.strip() for g in field.split(","))):
        first = group.split("|")[0].strip()
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            names.append(name)
    return names


def _is_library(name: str) -> bool:
    return (name.startswith("lib") and not name.endswith(("-bin", "-common", "-data"))) or name == "zlib1g"


def apt_show(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Candidate stanza of each package (virtual or unknown names are left out)."""
    names = sorted(set(names))
    proc = run_tool(["apt-cache", "show", "--no-all-versions", *names], timeout=60)
    found = {}
    for st in _parse_stanzas(proc.stdout):
        if "Package" in st and st["Package"] not in found:
            found[st["Package"]] = st
    return found


def resolve_packages(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """``{package: candidate version}``: the kernel, ``packages`` and their libraries (recursively)."""
    meta = apt_show([KERNEL_META])
    if KERNEL_META not in meta:
        raise BuildError(f"apt-cache knows no {KERNEL_META}: run `apt-get update` (Debian sources)")
    kernels = [d for d in _dep_names(meta[KERNEL_META].get("Depends", "")) if d.startswith("linux-image-")]
    if not kernels:
        raise BuildError(f"{KERNEL_META} depends on no linux-image-* package")
    versions: dict[str, str] = {}
    todo = [kernels[0], *packages]
    top = set(todo)
    seen: set[str] = set()
    while todo:
        batch = [n for n in dict.fromkeys(todo) if n not in seen]
        todo = []
        if not batch:
            break
        seen.update(batch)
        info = apt_show(batch)
        missing = [n for n in batch if n in top and n not in info]
        if missing:
            raise BuildError(f"apt-cache has no candidate for {missing}: run `apt-get update`")
        for name, st in info.items():
            versions[name] = st["Version"]
            if name.startswith("linux-image-"):
                continue  # its Depends (kmod, initramfs-tools...) are host tools, not image content
            deps = _dep_names(st.get("Depends", "")) + _dep_names(st.get("Pre-Depends", ""))
            todo += [d for d in deps if _is_library(d) and d not in seen]
    return dict(sorted(versions.items()))


def _deb_path(deb_dir: Path, name: str, version: str) -> Path | None:
    pattern = f"{name}_{version.replace(':', '%3a')}_*.deb"
    hits = sorted(deb_dir.glob(pattern))
    return hits[0] if hits else None


def download(versions: dict[str, str], deb_dir: Path, progress: Callable[[str], None],
             on_stage: OnStage = no_progress) -> dict[str, Path]:
    """``apt-get download`` every package not in ``deb_dir`` yet; ``{name: .deb path}``.

    In at most :data:`DOWNLOAD_BATCHES` batches, each reported to ``on_stage`` when it is in. The
    first batch that fails is retried once after ``apt-get update``.
    """
    deb_dir.mkdir(parents=True, exist_ok=True)
    missing = [n for n, v in versions.items() if _deb_path(deb_dir, n, v) is None]
    done = len(versions) - len(missing)
    if missing:
        progress(f"downloading {len(missing)} Debian packages into {deb_dir}")
    on_stage(BuildProgress("download", done, len(versions)))
    if missing:
        size = -(-len(missing) // DOWNLOAD_BATCHES)
        updated = False
        for i in range(0, len(missing), size):
            batch = missing[i:i + size]
            argv = ["apt-get", "download", *(f"{n}={versions[n]}" for n in batch)]
            proc = run_tool(argv, timeout=900, cwd=deb_dir)
            if proc.returncode != 0 and not updated:
                progress("apt-get download failed; refreshing the package lists (apt-get update)")
                run_tool(["apt-get", "update"], timeout=300)
                updated = True
                proc = run_tool(argv, timeout=900, cwd=deb_dir)
            if proc.returncode != 0:
                raise BuildError(f"apt-get download failed: {proc.stderr.strip()[-2000:]}")
            done += len(batch)
            on_stage(BuildProgress("download", done, len(versions), batch[-1]))
    paths = {}
    for n, v in versions.items():
        p = _deb_path(deb_dir, n, v)
        if p is None:
            raise BuildError(f"{n}={v} was not downloaded into {deb_dir}")
        paths[n] = p
    return paths


def unpack(debs: dict[str, Path], staging: Path, on_stage: OnStage = no_progress) -> None:
    """``dpkg -x`` every package into ``staging``, each reported to ``on_stage``."""
    for name in counted_stage("unpack", debs, on_stage):
        proc = run_tool(["dpkg", "-x", str(debs[name]), str(staging)], timeout=300)
        if proc.returncode != 0:
            raise BuildError(f"dpkg -x {debs[name]} failed: {proc.stderr.strip()}")
