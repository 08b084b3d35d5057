"""The management network: how the orchestrator reaches each emulated host's sshd.

The orchestrator runs in the root network namespace; every emulated host lives in its own. Each
host namespace gets one extra veth pair to the root namespace, on which its sshd listens. This
path is separate from the shaped medium, so control traffic (SSH, SFTP) never queues behind
frames or competing load, and frames never cross it: the head and the tail talk over the lab
addresses, through the AP.

Addresses: one /24 per run from 198.19.128.0/17 (the top half of the benchmarking range's
wired side, far above the wired hosts' /24s), chosen from the run id and skipping any /24 a
root-namespace address's network overlaps (:func:`free_subnet`, which the AP VM's management
/30 uses too), so several runs on one machine never share one (an
early version used one fixed /24, and two concurrent runs reached each other's sshd: the pinned
host keys refused it). One /30 per host: the k-th host's root side is ``.4k+1`` and its
namespace side ``.4k+2``.
Interface names carry the run's owned prefix (root side ``tb<run>-m<host>``, namespace side
``tb<run>-n<host>``), so ``testbed clean`` removes them after a killed run.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Sequence

from pyroute2 import IPRoute

from testbed.lab import names, netns
from testbed.lab.plan import LabError

log = logging.getLogger(__name__)

MANAGEMENT_POOL = ipaddress.ip_network("198.19.128.0/17")
MAX_HOSTS = 256 // 4


@dataclass(frozen=True)
class ManagementLink:
    host: str
    namespace: str
    root_interface: str
    root_address: str
    address: str
    """Where the host's sshd listens."""


def root_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of every address in the root namespace."""
    with IPRoute() as root:
        return [ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False)
                for a in root.get_addr(family=socket.AF_INET)]


def free_subnet(pool: ipaddress.IPv4Network, prefixlen: int, run_id: str,
                what: str) -> ipaddress.IPv4Network:
    """A /``prefixlen`` block of ``pool`` that no root-namespace network overlaps, trying the run
    id's block first and then the next ones (so concurrent runs spread out). ``what`` names the
    block's use in the error when none is left."""
    blocks = list(pool.subnets(new_prefix=prefixlen))
    used = root_networks()
    start = int(run_id, 16) % len(blocks)
    for i in range(len(blocks)):
        block = blocks[(start + i) % len(blocks)]
        if not any(block.overlaps(u) for u in used):
            return block
    raise LabError(f"no free /{prefixlen} left in {pool} for {what}")


def pick_subnet(run_id: str) -> ipaddress.IPv4Network:
    """The run's management /24 (see the module docstring)."""
    return free_subnet(MANAGEMENT_POOL, 24, run_id, "a management network")


def plan_links(run_id: str, hosts: Sequence[str], subnet: ipaddress.IPv4Network) -> list[ManagementLink]:
    if len(hosts) > MAX_HOSTS:
        raise ValueError(f"the management network has room for {MAX_HOSTS} hosts, got {len(hosts)}")
    base = subnet.network_address
    return [
        ManagementLink(
            host=h,
            namespace=names.namespace_name(run_id, h),
            root_interface=names.interface_name(run_id, "m" + h),
            root_address=str(base + 4 * k + 1),
            address=str(base + 4 * k + 2),
        )
        for k, h in enumerate(hosts)
    ]


def create(run_id: str, hosts: Sequence[str]) -> list[ManagementLink]:
    """Add a management veth to each host namespace (which must exist)."""
    links = plan_links(run_id, hosts, pick_subnet(run_id))
    with IPRoute() as root:
        for link in links:
            peer = names.interface_name(run_id, "n" + link.host)
            root.link("add", ifname=link.root_interface, kind="veth",
                      peer={"ifname": peer, "net_ns_fd": netns.netns_path(link.namespace)})
            index = root.link_lookup(ifname=link.root_interface)[0]
            root.addr("add", index=index, address=link.root_address, prefixlen=30)
            root.link("set", index=index, state="up")
            with IPRoute(netns=link.namespace, flags=0) as ns:
                inner = ns.link_lookup(ifname=peer)[0]
                ns.addr("add", index=inner, address=link.address, prefixlen=30)
                ns.link("set", index=inner, state="up")
            log.debug("management link %s: %s <-> %s", link.host, link.root_address, link.address)
    return links


def remove(links: Sequence[ManagementLink]) -> None:
    """Delete the root-side ends (the namespace ends go with them); missing ones are fine."""
    with IPRoute() as root:
        for link in links:
            found = root.link_lookup(ifname=link.root_interface)
            if found:
                root.link("del", index=found[0])
