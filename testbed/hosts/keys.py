"""Per-run SSH key material for the testbed.

Every run gets a fresh private folder (mode 0700) holding:

* ``client_ed25519`` / ``client_ed25519.pub`` -- the orchestrator's client key pair;
* ``hostkeys/<host>_ed25519`` (+ ``.pub``) -- one sshd host key per emulated host;
* ``authorized_keys`` -- the client public key, installed by every emulated sshd;
* ``known_hosts`` -- OpenSSH format, one ``[address]:port keytype base64`` line per host, so the
  client pins exactly the key made for that host in this run;
* ``hosts.json`` -- the same mapping in machine-readable form (for the run manifest).

Nothing is reused across runs: :meth:`RunKeys.create` refuses a folder that already holds keys.

Keys are ed25519. They are made with ``ssh-keygen -t ed25519 -N ''`` when it is installed, or
otherwise with the ``cryptography`` package (a paramiko dependency), which writes the same
``openssh-key-v1`` format (paramiko itself cannot *generate* ed25519 keys).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

__all__ = [
    "KeyPair",
    "HostKeyEntry",
    "RunKeys",
    "generate_ed25519",
    "known_hosts_name",
    "public_key_fingerprint",
]

_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def known_hosts_name(address: str, port: int) -> str:
    """The host name OpenSSH and paramiko use in known_hosts for ``address:port``.

    Port 22 is written bare; any other port as ``[address]:port`` (IPv6 addresses too).
    """
    if port == 22:
        return address
    return f"[{address}]:{port}"


def public_key_fingerprint(public_line: str) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a ``keytype base64 [comment]`` line."""
    import base64
    import hashlib

    parts = public_line.split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {public_line!r}")
    blob = base64.b64decode(parts[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@dataclass(frozen=True)
class KeyPair:
    """A private key file and its public half."""

    private: Path
    public: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def key_type(self) -> str:
        return self.public_line.split()[0]

    @property
    def key_base64(self) -> str:
        return self.public_line.split()[1]

    @property
    def fingerprint(self) -> str:
        return public_key_fingerprint(self.public_line)

    @property
    def openssh_public(self) -> str:
        """``keytype base64`` without the comment."""
        return f"{self.key_type} {self.key_base64}"


@dataclass(frozen=True)
class HostKeyEntry:
    """One emulated host's sshd host key and where its sshd listens."""

    name: str
    address: str
    port: int
    key: KeyPair

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.address, self.port)

    @property
    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.key.openssh_public}"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _generate_with_cryptography(private: Path, comment: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        encoding=serialization.Encoding.OpenSSH,
        format=serialization.PublicFormat.OpenSSH,
    ).decode()
    _write_private(private, pem)
    return f"{pub} {comment}".strip()


def _generate_with_ssh_keygen(ssh_keygen: str, private: Path, comment: str) -> str:
    proc = subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"ssh-keygen failed to make {private} (rc={proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    os.chmod(private, 0o600)
    return Path(f"{private}.pub").read_text().strip()


def generate_ed25519(private: Path, comment: str = "", *, use_ssh_keygen: bool | None = None) -> KeyPair:
    """Make a new, unencrypted ed25519 key pair at ``private`` and ``private.pub``.

    ``use_ssh_keygen``: ``None`` (default) uses ssh-keygen when it is on PATH, else the
    ``cryptography`` package; ``True``/``False`` force one path. Refuses to overwrite.
    """
    private = Path(private)
    public = Path(f"{private}.pub")
    if private.exists() or public.exists():
        raise FileExistsError(f"refusing to overwrite existing key {private}")
    ssh_keygen = shutil.which("ssh-keygen")
    if use_ssh_keygen is None:
        use_ssh_keygen = ssh_keygen is not None
    if use_ssh_keygen:
        if ssh_keygen is None:
            raise FileNotFoundError("ssh-keygen not found on PATH (install openssh-client)")
        public_line = _generate_with_ssh_keygen(ssh_keygen, private, comment)
    else:
        public_line = _generate_with_cryptography(private, comment)
        public.write_text(public_line + "\n")
    os.chmod(public, 0o644)
    log.debug("made ed25519 key %s (%s)", private, public_key_fingerprint(public_line))
    return KeyPair(private=private, public=public, public_line=public_line)


@dataclass
class RunKeys:
    """All key material of one run, rooted in a private folder."""

    root: Path
    client: KeyPair
    hosts: dict[str, HostKeyEntry] = field(default_factory=dict)
    use_ssh_keygen: bool | None = None
    comment_prefix: str = "testbed"

    # ---- layout ---------------------------------------------------------------------------
    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def hosts_json(self) -> Path:
        return self.root / "hosts.json"

    @property
    def hostkey_dir(self) -> Path:
        return self.root / "hostkeys"

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: Path,
        hosts: Iterable[tuple[str, str, int]] = (),
        *,
        comment_prefix: str = "testbed",
        use_ssh_keygen: bool | None = None,
    ) -> "RunKeys":
        """Make a fresh key folder at ``root`` (created with mode 0700).

        ``hosts``: ``(name, address, port)`` for every emulated host whose sshd needs a host
        key; more can be added later with :meth:`add_host`. ``root`` must not exist yet or be
        an empty directory: keys are never reused across runs.
        """
        root = Path(root)
        if root.exists():
            if not root.is_dir():
                raise FileExistsError(f"{root} exists and is not a directory")
            if any(root.iterdir()):
                raise FileExistsError(
                    f"key folder {root} is not empty: each run makes its own keys, "
                    "use a new folder"
                )
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        (root / "hostkeys").mkdir(mode=0o700)
        client = generate_ed25519(
            root / "client_ed25519", f"{comment_prefix}-client", use_ssh_keygen=use_ssh_keygen
        )
        keys = cls(
            root=root, client=client, use_ssh_keygen=use_ssh_keygen, comment_prefix=comment_prefix
        )
        keys.authorized_keys.write_text(client.public_line + "\n")
        os.chmod(keys.authorized_keys, 0o600)
        for name, address, port in hosts:
            keys.add_host(name, address, port)
        keys._write_known_hosts()
        log.info("made run keys in %s (client %s)", root, client.fingerprint)
        return keys

    def add_host(self, name: str, address: str, port: int = 22) -> HostKeyEntry:
        """Make a host key for emulated host ``name`` listening at ``address:port``."""
        if not _HOST_NAME_RE.match(name):
            raise ValueError(f"bad host name {name!r} (letters, digits, '_', '.', '-')")
        if name in self.hosts:
            raise ValueError(f"host {name!r} already has a key in this run")
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port} for host {name!r}")
        key = generate_ed25519(
            self.hostkey_dir / f"{name}_ed25519",
            f"{self.comment_prefix}-host-{name}",
            use_ssh_keygen=self.use_ssh_keygen,
        )
        entry = HostKeyEntry(name=name, address=address, port=port, key=key)
        self.hosts[name] = entry
        self._write_known_hosts()
        return entry

    def _write_known_hosts(self) -> None:
        lines = [f"{e.known_hosts_line} {e.name}\n" for e in self.hosts.values()]
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.chmod(tmp, 0o600)
        tmp.replace(self.known_hosts)
        self.hosts_json.write_text(json.dumps(self.describe(), indent=2) + "\n")

    # ---- queries --------------------------------------------------------------------------
    def host_key_for(self, name: str) -> KeyPair:
        return self.hosts[name].key

    def describe(self) -> dict:
        """JSON-able summary (public material only) for a run manifest."""
        return {
            "client_key": {
                "public": self.client.openssh_public,
                "fingerprint": self.client.fingerprint,
            },
            "hosts": {
                e.name: {
                    "address": e.address,
                    "port": e.port,
                    "host_key": e.key.openssh_public,
                    "fingerprint": e.key.fingerprint,
                }
                for e in self.hosts.values()
            },
        }
