"""What both ns-3 simulator processes of the ``ns3`` backend share (the 802.11g cell,
:mod:`testbed.lab.ns3_sim`; the LTE cell, :mod:`testbed.lab.ns3_lte_sim`).

- :func:`open_tap`: a tap made in a host's namespace, whose file descriptor an FdNetDevice uses.
- ``REALTIME_CPP`` (namespace ``tbrt``, compiled before each simulator's own C++):
  ``AddFd`` (an FdNetDevice on a tap's descriptor, addressed), ``SampleLateness`` (called every
  1 ms of simulated time: wall clock minus simulated time, above its smallest value seen, into a
  histogram of 10 us bins once ``g_ready``), and ``BeginStats``/``EndStats``, which write the
  stats file atomically (``<path>.tmp`` renamed), opening it with the simulated time, readiness
  and the lateness histogram (the format :func:`testbed.lab.ns3_lab.lateness_window` reads); the
  simulator writes its own counters in between.
- :func:`simulator_main`: the process's life (protocol on stdout: ``TAPS`` once the taps are
  open, the simulator's ``READY {json}``, ``RUNNING`` before the simulator runs until killed).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000

REALTIME_CPP = r"""
#include "ns3/core-module.h"
#include "ns3/network-module.h"
#include "ns3/internet-module.h"
#include "ns3/fd-net-device-module.h"
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace tbrt {
using namespace ns3;

const int LATE_BIN_US = 10;
const int LATE_BINS = 10001;  // 0 .. 100 ms in 10 us bins, the last one is "more"
std::vector<uint64_t> g_late(LATE_BINS, 0);
int64_t g_base = INT64_MAX, g_lateMax = 0;
uint64_t g_lateN = 0;
bool g_ready = false;

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

void SampleLateness() {
  int64_t diff = WallNs() - Simulator::Now().GetNanoSeconds();
  if (diff < g_base) g_base = diff;
  if (g_ready) {
    int64_t late = diff - g_base;
    if (late > g_lateMax) g_lateMax = late;
    int64_t bin = late / (1000 * LATE_BIN_US);
    g_late[bin < LATE_BINS - 1 ? bin : LATE_BINS - 1]++;
    g_lateN++;
  }
}

uint32_t AddFd(Ptr<Node> node, int fd, const std::string& addr, int prefix) {
  FdNetDeviceHelper fdh;
  Ptr<FdNetDevice> d = DynamicCast<FdNetDevice>(fdh.Install(node).Get(0));
  d->SetFileDescriptor(fd);
  Ptr<Ipv4> ip = node->GetObject<Ipv4>();
  uint32_t i = ip->AddInterface(d);
  ip->AddAddress(i, Ipv4InterfaceAddress(Ipv4Address(addr.c_str()),
                                         Ipv4Mask(("/" + std::to_string(prefix)).c_str())));
  ip->SetUp(i);
  return i;
}

// The stats file's temporary copy, opened with its JSON object's common keys written (no
// trailing comma); nullptr if it cannot be opened.
FILE* BeginStats(const std::string& path) {
  FILE* f = std::fopen((path + ".tmp").c_str(), "w");
  if (!f) return nullptr;
  std::fprintf(f, "{\"sim_s\": %.6f, \"ready\": %s, \"late_bin_us\": %d, \"late_samples\": %llu, "
               "\"late_max_us\": %.1f, \"late_hist\": {", Simulator::Now().GetSeconds(),
               g_ready ? "true" : "false", LATE_BIN_US, (unsigned long long)g_lateN,
               g_lateMax / 1000.0);
  bool first = true;
  for (int b = 0; b < LATE_BINS; ++b) {
    if (!g_late[b]) continue;
    std::fprintf(f, "%s\"%d\": %llu", first ? "" : ", ", b, (unsigned long long)g_late[b]);
    first = false;
  }
  std::fprintf(f, "}");
  return f;
}

// Closes the JSON object and puts the file in place.
void EndStats(FILE* f, const std::string& path) {
  std::fprintf(f, "}\n");
  std::fclose(f);
  std::rename((path + ".tmp").c_str(), path.c_str());
}
}  // namespace tbrt
"""


def open_tap(netns_path: str, name: str) -> int:
    """A tap ``name`` created in the namespace at ``netns_path`` (not persistent: it goes away
    when this process closes it or dies); the file descriptor stays usable from any namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns_path}")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back into the simulator's namespace")
    finally:
        os.close(own)
        os.close(target)
    return fd


def simulator_main(argv: list[str], module: str, kind: str, hosts_key: str, cpp: str,
                   namespace: str, build: Callable[[Any, dict[str, Any], dict[str, int]], None]
                   ) -> int:
    """Run one simulator process: ``argv`` is ``[CONFIG.json]`` (written by the lab, its
    ``kind`` must be ``kind``); a tap for each host in ``cfg[hosts_key]`` and ``cfg["wired"]``;
    ``cpp`` compiled after ``REALTIME_CPP``; ``build(sim, cfg, fds)`` sets up the C++ namespace
    ``namespace`` (``sim``), then the simulator runs until the process is killed."""
    if len(argv) != 1:
        print(f"usage: python -m {module} CONFIG.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # stopped by the lab (SIGTERM) or killed
    with open(argv[0]) as fh:
        cfg = json.load(fh)
    if cfg["kind"] != kind:
        print(f"{module}: link kind {cfg['kind']!r} is not simulated here (only {kind})",
              file=sys.stderr)
        return 2
    fds = {h["name"]: open_tap(h["netns"], h["tap"]) for h in cfg[hosts_key] + cfg["wired"]}
    print("TAPS", flush=True)
    from ns import ns  # 9-13 s; the lab addresses the taps meanwhile

    ns.cppyy.cppdef(REALTIME_CPP + cpp)
    sim = getattr(ns.cppyy.gbl, namespace)
    build(sim, cfg, fds)
    print("RUNNING", flush=True)
    sim.Run()
    return 0
