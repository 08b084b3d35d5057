"""A small, deterministic writer of ``newc`` cpio archives (the Linux initramfs format).

Entries are written in the order given (parents before children), with uid/gid 0 and mtime 0,
so the same tree always gives the same bytes (and the same sha256). The kernel accepts several
archives concatenated (even mixing compressed and uncompressed ones): a run's small overlay
(keys, addresses) is appended to the cached base image without rebuilding it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_MAGIC = b"070701"


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


class CpioWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._ino = 1
        self._seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/") or "."
        if name in self._seen:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._seen.add(name)
        raw = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(raw), 0]
        self._ino += 1
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + raw + _pad(len(header) + len(raw)))
        self.out.write(data + _pad(len(data)))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def tree(self, root: Path, prefix: str = "") -> None:
        """Add every entry under ``root`` (sorted, parents first), as ``prefix/relative``."""
        root = Path(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            for e in sorted(dirnames + filenames):
                full = os.path.join(dirpath, e)
                rel = os.path.normpath(os.path.join(prefix, rel_dir, e))
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    self.symlink(rel, os.readlink(full))
                elif stat.S_ISDIR(st.st_mode):
                    self.directory(rel, stat.S_IMODE(st.st_mode))
                elif stat.S_ISREG(st.st_mode):
                    self.file(rel, Path(full).read_bytes(), stat.S_IMODE(st.st_mode))
            # os.walk does not descend into symlinked directories: nothing more to do

    def trailer(self) -> None:
        self._entry("TRAILER!!!", 0)


