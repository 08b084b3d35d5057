"""The ns-3 process of the ``ns3`` lab backend: an 802.11g cell simulated in real time, joined to
the lab's namespaces through taps. Run as its own process (``python -m testbed.lab.ns3_sim
CONFIG.json``) from a clean working directory (ns-3's import scans the current directory for
build profiles), inside the router's namespace; see :mod:`testbed.lab.ns3_lab` for the lab side.

What it builds (ns-3.44, ``RealtimeSimulatorImpl`` best effort, checksums on)::

    md ns: tap 198.18.1.2 ─fd─ [sta node: FdNetDevice 198.18.1.1 | WifiNetDevice STA] ┐
    ext ns: tap 198.18.2.2 ─fd─ [sta node: FdNetDevice 198.18.2.1 | WifiNetDevice STA] ├ 802.11g BSS
                                         [ap node: WifiNetDevice AP | point-to-point 1 Gbit/s] ┘
    es ns: tap 198.19.0.2 ─fd─ [wired node: FdNetDevice 198.19.0.1 | point-to-point] ── ap node

Each station node is the station's gateway (IPv4 forwarding, static routes), so the Linux side
keeps the address plan of the other backends. The 802.11 devices have no queue disc: each one's
WifiMacQueue (``queue_packets``, ns-3's 500 ms MaxDelay) is its only queue. 802.11g ERP-OFDM, non-QoS DCF (CWmin 15, CWmax
1023, AIFSN 2: DIFS = SIFS + 2 slots), rate control ``constant`` (data ErpOfdmRate54Mbps,
control ErpOfdmRate24Mbps) or ``minstrel``; YANS channel with log-distance loss (exponent 3,
46.68 dB at 1 m) and constant-speed delay; stations placed around the AP at their distances.

Protocol on stdout (one line each, the rest of stdout/stderr is log): ``TAPS`` once every tap is
open (the lab then addresses them), ``READY {json}`` once every station is associated (slot, SIFS,
MAC addresses). Every ``stats_period_ms`` of simulated time the counters are written (atomically)
to ``stats_path`` as JSON: per device MAC retries (``MacTxDataFailed``), drops after the last retry,
MAC/PHY drops, TX/RX airtime, queue length now and its maximum, and the real-time scheduler's
lateness (wall clock minus simulated time, sampled by an event every 1 ms; a histogram in 10 us
bins). The process runs until it is killed; its taps vanish with it.
"""

from __future__ import annotations

import sys
from typing import Any

from testbed.lab.ns3_realtime import simulator_main

CPP = r"""
#include "ns3/core-module.h"
#include "ns3/network-module.h"
#include "ns3/internet-module.h"
#include "ns3/wifi-module.h"
#include "ns3/mobility-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/fd-net-device-module.h"
#include "ns3/traffic-control-module.h"
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace tbsim {
using namespace ns3;
using namespace tbrt;

struct Dev {
  std::string name;
  Ptr<WifiNetDevice> dev;
  uint64_t macTx = 0, macRx = 0, dataFailed = 0, finalFailed = 0, macTxDrop = 0, macRxDrop = 0,
           phyRxDrop = 0;
  int64_t txNs = 0, rxNs = 0, busyNs = 0;
  uint32_t queueMax = 0;
};

std::vector<Dev> g_devs;       // [0] is the AP
std::string g_statsPath;
int g_statsPeriodMs = 100;
NodeContainer g_sta, g_ap, g_wired;
std::vector<std::string> g_staNet, g_wiredNet;
std::vector<double> g_dist;

void Init(int seed, int queuePackets) {
  GlobalValue::Bind("SimulatorImplementationType", StringValue("ns3::RealtimeSimulatorImpl"));
  GlobalValue::Bind("ChecksumEnabled", BooleanValue(true));
  Config::SetDefault("ns3::RealtimeSimulatorImpl::SynchronizationMode", StringValue("BestEffort"));
  Config::SetDefault("ns3::WifiMacQueue::MaxSize",
                     QueueSizeValue(QueueSize(std::to_string(queuePackets) + "p")));
  RngSeedManager::SetSeed(1);
  RngSeedManager::SetRun(seed);
  g_ap.Create(1);
  g_wired.Create(1);
  InternetStackHelper().Install(g_ap);
  InternetStackHelper().Install(g_wired);
}

void AddStation(const std::string& name, int fd, const std::string& gw, int prefix,
                const std::string& net, double distance) {
  Ptr<Node> n = CreateObject<Node>();
  InternetStackHelper().Install(n);
  AddFd(n, fd, gw, prefix);
  g_sta.Add(n);
  g_staNet.push_back(net);
  g_dist.push_back(distance);
  Dev d; d.name = name; g_devs.push_back(d);
}

void AddWired(int fd, const std::string& gw, int prefix, const std::string& net) {
  AddFd(g_wired.Get(0), fd, gw, prefix);
  g_wiredNet.push_back(net);
}

void OnDataFailed(int i, Mac48Address) { g_devs[i].dataFailed++; }
void OnFinalFailed(int i, Mac48Address) { g_devs[i].finalFailed++; }
void OnMacTx(int i, Ptr<const Packet>) { g_devs[i].macTx++; }
void OnMacRx(int i, Ptr<const Packet>) { g_devs[i].macRx++; }
void OnMacTxDrop(int i, Ptr<const Packet>) { g_devs[i].macTxDrop++; }
void OnMacRxDrop(int i, Ptr<const Packet>) { g_devs[i].macRxDrop++; }
void OnPhyRxDrop(int i, Ptr<const Packet>, WifiPhyRxfailureReason) { g_devs[i].phyRxDrop++; }
void OnState(int i, Time, Time dur, WifiPhyState s) {
  if (s == WifiPhyState::TX) g_devs[i].txNs += dur.GetNanoSeconds();
  else if (s == WifiPhyState::RX) g_devs[i].rxNs += dur.GetNanoSeconds();
  else if (s == WifiPhyState::CCA_BUSY) g_devs[i].busyNs += dur.GetNanoSeconds();
}

Ptr<WifiMacQueue> QueueOf(const Dev& d) { return d.dev->GetMac()->GetTxop()->GetWifiMacQueue(); }

void Tick() {
  SampleLateness();
  for (auto& d : g_devs) {
    uint32_t q = QueueOf(d)->GetNPackets();
    if (q > d.queueMax) d.queueMax = q;
  }
  Simulator::Schedule(MilliSeconds(1), &Tick);
}

void WriteStats() {
  FILE* f = BeginStats(g_statsPath);
  if (f) {
    std::fprintf(f, ", \"devices\": {");
    for (size_t i = 0; i < g_devs.size(); ++i) {
      const Dev& d = g_devs[i];
      Ptr<WifiMacQueue> q = QueueOf(d);
      std::fprintf(f, "%s\"%s\": {\"mac_tx\": %llu, \"mac_rx\": %llu, \"retries\": %llu, "
                   "\"retry_limit_drops\": %llu, \"mac_tx_drops\": %llu, \"mac_rx_drops\": %llu, "
                   "\"phy_rx_drops\": %llu, \"tx_airtime_s\": %.6f, \"rx_airtime_s\": %.6f, "
                   "\"cca_busy_s\": %.6f, \"queue_now\": %u, \"queue_max\": %u, "
                   "\"queue_dropped\": %u}", i ? ", " : "", d.name.c_str(),
                   (unsigned long long)d.macTx, (unsigned long long)d.macRx,
                   (unsigned long long)d.dataFailed, (unsigned long long)d.finalFailed,
                   (unsigned long long)d.macTxDrop, (unsigned long long)d.macRxDrop,
                   (unsigned long long)d.phyRxDrop, d.txNs / 1e9, d.rxNs / 1e9, d.busyNs / 1e9,
                   q->GetNPackets(), d.queueMax, q->GetTotalDroppedPackets());
    }
    std::fprintf(f, "}");
    EndStats(f, g_statsPath);
  }
  Simulator::Schedule(MilliSeconds(g_statsPeriodMs), &WriteStats);
}

void CheckReady() {
  for (uint32_t i = 0; i < g_sta.GetN(); ++i) {
    Ptr<StaWifiMac> m = DynamicCast<StaWifiMac>(g_devs[i + 1].dev->GetMac());
    if (!m->IsAssociated()) { Simulator::Schedule(MilliSeconds(10), &CheckReady); return; }
  }
  g_ready = true;
  std::printf("READY {\"sim_s\": %.6f, \"devices\": {", Simulator::Now().GetSeconds());
  for (size_t i = 0; i < g_devs.size(); ++i) {
    Ptr<WifiPhy> p = g_devs[i].dev->GetPhy();
    std::ostringstream mac; mac << g_devs[i].dev->GetAddress();
    std::printf("%s\"%s\": {\"mac\": \"%s\", \"slot_us\": %lld, \"sifs_us\": %lld}", i ? ", " : "",
                g_devs[i].name.c_str(), mac.str().c_str(), (long long)p->GetSlot().GetMicroSeconds(),
                (long long)p->GetSifs().GetMicroSeconds());
  }
  std::printf("}}\n");
  std::fflush(stdout);
}

void Finish(const std::string& rateControl, const std::string& bssNet, const std::string& p2pNet,
            const std::string& statsPath, int statsPeriodMs) {
  g_statsPath = statsPath;
  g_statsPeriodMs = statsPeriodMs;
  WifiHelper wifi;
  wifi.SetStandard(WIFI_STANDARD_80211g);
  if (rateControl == "minstrel") {
    wifi.SetRemoteStationManager("ns3::MinstrelWifiManager");
  } else {
    wifi.SetRemoteStationManager("ns3::ConstantRateWifiManager", "DataMode",
                                 StringValue("ErpOfdmRate54Mbps"), "ControlMode",
                                 StringValue("ErpOfdmRate24Mbps"));
  }
  YansWifiChannelHelper channel = YansWifiChannelHelper::Default();
  YansWifiPhyHelper phy;
  phy.SetChannel(channel.Create());
  WifiMacHelper mac;
  Ssid ssid("testbed");
  mac.SetType("ns3::StaWifiMac", "Ssid", SsidValue(ssid), "ActiveProbing", BooleanValue(false));
  NetDeviceContainer staDevs = wifi.Install(phy, mac, g_sta);
  mac.SetType("ns3::ApWifiMac", "Ssid", SsidValue(ssid));
  NetDeviceContainer apDevs = wifi.Install(phy, mac, g_ap);

  MobilityHelper mob;
  Ptr<ListPositionAllocator> pos = CreateObject<ListPositionAllocator>();
  for (uint32_t i = 0; i < g_sta.GetN(); ++i) {
    double a = 2 * M_PI * i / g_sta.GetN();
    pos->Add(Vector(g_dist[i] * std::cos(a), g_dist[i] * std::sin(a), 0));
  }
  pos->Add(Vector(0, 0, 0));
  mob.SetPositionAllocator(pos);
  mob.SetMobilityModel("ns3::ConstantPositionMobilityModel");
  mob.Install(g_sta);
  mob.Install(g_ap);

  Dev ap; ap.name = "ap";
  g_devs.insert(g_devs.begin(), ap);
  g_devs[0].dev = DynamicCast<WifiNetDevice>(apDevs.Get(0));
  for (uint32_t i = 0; i < g_sta.GetN(); ++i) g_devs[i + 1].dev = DynamicCast<WifiNetDevice>(staDevs.Get(i));

  Ipv4AddressHelper bss;
  bss.SetBase(Ipv4Address(bssNet.c_str()), Ipv4Mask("/24"));
  Ipv4InterfaceContainer apIf = bss.Assign(apDevs);
  Ipv4InterfaceContainer staIf = bss.Assign(staDevs);
  // Assign() puts ns-3's default queue disc (FqCoDel, 10240 packets) on each device; without
  // it the WifiMacQueue (queue_packets) is the one queue of every 802.11 device.
  TrafficControlHelper().Uninstall(staDevs);
  TrafficControlHelper().Uninstall(apDevs);
  PointToPointHelper p2p;
  p2p.SetDeviceAttribute("DataRate", StringValue("1Gbps"));
  p2p.SetChannelAttribute("Delay", StringValue("0ms"));
  NetDeviceContainer wire = p2p.Install(g_ap.Get(0), g_wired.Get(0));
  Ipv4AddressHelper wireNet;
  wireNet.SetBase(Ipv4Address(p2pNet.c_str()), Ipv4Mask("/30"));
  Ipv4InterfaceContainer wireIf = wireNet.Assign(wire);

  Ipv4StaticRoutingHelper srh;
  Ptr<Ipv4> apIp = g_ap.Get(0)->GetObject<Ipv4>();
  Ptr<Ipv4StaticRouting> apRoutes = srh.GetStaticRouting(apIp);
  uint32_t apWifi = apIp->GetInterfaceForDevice(apDevs.Get(0));
  uint32_t apWire = apIp->GetInterfaceForDevice(wire.Get(0));
  for (uint32_t i = 0; i < g_sta.GetN(); ++i) {
    Ipv4Address n(g_staNet[i].substr(0, g_staNet[i].find('/')).c_str());
    apRoutes->AddNetworkRouteTo(n, Ipv4Mask(g_staNet[i].substr(g_staNet[i].find('/')).c_str()),
                                staIf.GetAddress(i), apWifi);
    Ptr<Ipv4> sip = g_sta.Get(i)->GetObject<Ipv4>();
    srh.GetStaticRouting(sip)->SetDefaultRoute(apIf.GetAddress(0),
                                               sip->GetInterfaceForDevice(staDevs.Get(i)));
  }
  for (const auto& w : g_wiredNet) {
    apRoutes->AddNetworkRouteTo(Ipv4Address(w.substr(0, w.find('/')).c_str()),
                                Ipv4Mask(w.substr(w.find('/')).c_str()), wireIf.GetAddress(1), apWire);
  }
  Ptr<Ipv4> wip = g_wired.Get(0)->GetObject<Ipv4>();
  srh.GetStaticRouting(wip)->SetDefaultRoute(wireIf.GetAddress(0), wip->GetInterfaceForDevice(wire.Get(1)));

  for (size_t i = 0; i < g_devs.size(); ++i) {
    int k = (int)i;
    Ptr<WifiNetDevice> d = g_devs[i].dev;
    d->GetRemoteStationManager()->TraceConnectWithoutContext("MacTxDataFailed", MakeBoundCallback(&OnDataFailed, k));
    d->GetRemoteStationManager()->TraceConnectWithoutContext("MacTxFinalDataFailed", MakeBoundCallback(&OnFinalFailed, k));
    d->GetMac()->TraceConnectWithoutContext("MacTx", MakeBoundCallback(&OnMacTx, k));
    d->GetMac()->TraceConnectWithoutContext("MacRx", MakeBoundCallback(&OnMacRx, k));
    d->GetMac()->TraceConnectWithoutContext("MacTxDrop", MakeBoundCallback(&OnMacTxDrop, k));
    d->GetMac()->TraceConnectWithoutContext("MacRxDrop", MakeBoundCallback(&OnMacRxDrop, k));
    d->GetPhy()->TraceConnectWithoutContext("PhyRxDrop", MakeBoundCallback(&OnPhyRxDrop, k));
    d->GetPhy()->GetState()->TraceConnectWithoutContext("State", MakeBoundCallback(&OnState, k));
  }
  Simulator::Schedule(MilliSeconds(1), &Tick);
  Simulator::Schedule(MilliSeconds(10), &CheckReady);
  Simulator::Schedule(MilliSeconds(g_statsPeriodMs), &WriteStats);
}

void Run() { Simulator::Run(); }
}  // namespace tbsim
"""


def _build(sim: Any, cfg: dict[str, Any], fds: dict[str, int]) -> None:
    sim.Init(int(cfg["seed"]), int(cfg["queue_packets"]))
    for h in cfg["stations"]:
        sim.AddStation(h["name"], fds[h["name"]], h["gateway"], int(h["prefixlen"]), h["network"],
                       float(h["distance_m"]))
    for h in cfg["wired"]:
        sim.AddWired(fds[h["name"]], h["gateway"], int(h["prefixlen"]), h["network"])
    sim.Finish(cfg["rate_control"], cfg["bss_network"], cfg["wire_network"], cfg["stats_path"],
               int(cfg["stats_period_ms"]))


def main(argv: list[str]) -> int:
    return simulator_main(argv, "testbed.lab.ns3_sim", "wifi", "stations", CPP, "tbsim", _build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
