"""The ns-3 process of the ``ns3`` lab backend for an LTE link: a LENA eNB with an EPC, the MD
and the external node as two UEs, simulated in real time and joined to the lab's namespaces
through taps. Run as its own process (``python -m testbed.lab.ns3_lte_sim CONFIG.json``) from a
clean working directory, inside the router's namespace; see :mod:`testbed.lab.ns3_lte` for the
lab side and the settings (bandwidth, power control, scheduler).

What it builds (ns-3.44, ``RealtimeSimulatorImpl`` best effort, checksums on)::

    md ns: tap 198.18.1.2 ─fd─ [UE node: FdNetDevice 198.18.1.1 | LteUeNetDevice 7.0.0.2] ┐ LTE
    ext ns: tap 198.18.2.2 ─fd─ [UE node: FdNetDevice 198.18.2.1 | LteUeNetDevice 7.0.0.3] ┤ air
                              [eNB node] ─S1-U─ [SGW] ─S5─ [PGW: tun 7.0.0.1 | point-to-point] ┘
    es ns: tap 198.19.0.2 ─fd─ [wired node: FdNetDevice 198.19.0.1 | point-to-point] ── PGW

Each UE node is its namespace's gateway (IPv4 forwarding), so the Linux side keeps the address
plan of the other backends and no address is translated. ns-3's PGW forwards downlink packets
only to an address it knows for a UE (``EpcPgwApplication``'s by-address map, filled by
``SetUeAddress``): each namespace's own address is added to that map for its UE's IMSI (the
UE's 7.0.0.x stays mapped too), the PGW routes that address to its tun device, the packet rides
the UE's default bearer (whose TFT matches everything) to the UE node, which forwards it to the
tap. Uplink needs nothing: the default bearer takes any packet the UE node routes to the LTE
device.

Protocol on stdout (one line each, the rest is log): ``TAPS`` once every tap is open, ``READY
{json}`` once both UEs are attached with their data radio bearer set up at the UE and the eNB
(IMSI, RNTI, LTE address per UE), ``RUNNING`` before the simulator starts. Every
``stats_period_ms`` of simulated time the counters are written (atomically) to ``stats_path``
as JSON: per UE the uplink grants, resource blocks and MCS the eNB's scheduler gave it, TB
sizes, the uplink PDUs the UE sent on them, the TBs the eNB expected and how many of them it
could not decode, PDCP bytes and packets each way at both ends, RLC bytes sent and RLC buffer
drops each way, the summed uplink PDCP delay; and the real-time lateness (wall clock minus
simulated time, sampled every 1 ms; a histogram in 10 us bins, the format
:func:`testbed.lab.ns3_lab.lateness_window` reads). The process runs until it is killed; its
taps vanish with it.
"""

from __future__ import annotations

import sys
from typing import Any

from testbed.lab.ns3_realtime import simulator_main

CPP = r"""
#include "ns3/core-module.h"
#include "ns3/network-module.h"
#include "ns3/internet-module.h"
#include "ns3/lte-module.h"
#include "ns3/mobility-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/fd-net-device-module.h"
#include "ns3/virtual-net-device-module.h"
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace tblte {
using namespace ns3;
using namespace tbrt;

struct Ue {
  std::string name, hostAddr;
  double distance = 0;
  Ptr<Node> node;
  Ptr<LteUeNetDevice> dev;
  uint64_t imsi = 0;
  uint16_t rnti = 0;
  uint64_t ulGrants = 0, ulRbs = 0, ulMcsSum = 0, ulTbBytes = 0, ulSent = 0, ulTbs = 0,
           ulTbErrors = 0;
  uint64_t ulPdcpTxBytes = 0, ulPdcpTxPkts = 0, ulPdcpRxBytes = 0, ulPdcpRxPkts = 0;
  uint64_t ulPdcpDelayNs = 0, ulRlcTxBytes = 0, ulRlcDrops = 0;
  uint64_t dlPdcpTxBytes = 0, dlPdcpTxPkts = 0, dlPdcpRxBytes = 0, dlPdcpRxPkts = 0;
  uint64_t dlRlcDrops = 0;
};

std::string g_statsPath;
int g_statsPeriodMs = 100;
std::vector<Ue> g_ues;
std::map<uint16_t, int> g_byRnti;
NodeContainer g_enb, g_wired;
std::vector<std::string> g_wiredNet;
Ptr<LteHelper> g_lte;
Ptr<PointToPointEpcHelper> g_epc;
Ptr<LteEnbNetDevice> g_enbDev;

void Init(int seed, const std::string& scheduler, int ulRbs, int dlRbs, int p0NominalPusch,
          int rlcBufferBytes) {
  GlobalValue::Bind("SimulatorImplementationType", StringValue("ns3::RealtimeSimulatorImpl"));
  GlobalValue::Bind("ChecksumEnabled", BooleanValue(true));
  Config::SetDefault("ns3::RealtimeSimulatorImpl::SynchronizationMode", StringValue("BestEffort"));
  Config::SetDefault("ns3::LteHelper::UseIdealRrc", BooleanValue(true));
  Config::SetDefault("ns3::LteEnbNetDevice::UlBandwidth", UintegerValue(ulRbs));
  Config::SetDefault("ns3::LteEnbNetDevice::DlBandwidth", UintegerValue(dlRbs));
  Config::SetDefault("ns3::LteEnbRrc::EpsBearerToRlcMapping",
                     EnumValue(LteEnbRrc::RLC_UM_ALWAYS));
  Config::SetDefault("ns3::LteRlcUm::MaxTxBufferSize", UintegerValue(rlcBufferBytes));
  Config::SetDefault("ns3::LteUePhy::EnableUplinkPowerControl", BooleanValue(true));
  Config::SetDefault("ns3::LteUePowerControl::ClosedLoop", BooleanValue(false));
  Config::SetDefault("ns3::LteUePowerControl::PoNominalPusch", IntegerValue(p0NominalPusch));
  RngSeedManager::SetSeed(1);
  RngSeedManager::SetRun(seed);
  g_lte = CreateObject<LteHelper>();
  g_epc = CreateObject<PointToPointEpcHelper>();
  g_lte->SetEpcHelper(g_epc);
  g_lte->SetSchedulerType(scheduler);
  g_enb.Create(1);
  g_wired.Create(1);
  InternetStackHelper().Install(g_wired);
}

void AddUe(const std::string& name, int fd, const std::string& gw, int prefix,
           const std::string& hostAddr, double distance) {
  Ue u;
  u.name = name;
  u.hostAddr = hostAddr;
  u.distance = distance;
  u.node = CreateObject<Node>();
  InternetStackHelper().Install(u.node);
  AddFd(u.node, fd, gw, prefix);
  g_ues.push_back(u);
}

void AddWired(int fd, const std::string& gw, int prefix, const std::string& net) {
  AddFd(g_wired.Get(0), fd, gw, prefix);
  g_wiredNet.push_back(net);
}

void Connect(Ptr<Object> o, const std::string& trace, const CallbackBase& cb) {
  if (!o->TraceConnectWithoutContext(trace, cb)) {
    NS_FATAL_ERROR("no trace source " << trace << " on " << o->GetInstanceTypeId().GetName());
  }
}

Ue* ByRnti(uint16_t rnti) {
  auto it = g_byRnti.find(rnti);
  return it == g_byRnti.end() ? nullptr : &g_ues[it->second];
}

void OnUlScheduling(uint32_t, uint32_t, uint16_t rnti, uint8_t mcs, uint16_t tbBytes, uint8_t) {
  if (Ue* u = ByRnti(rnti)) { u->ulGrants++; u->ulMcsSum += mcs; u->ulTbBytes += tbBytes; }
}
void OnUlReception(PhyReceptionStatParameters p) {
  if (Ue* u = ByRnti(p.m_rnti)) { u->ulTbs++; if (!p.m_correctness) u->ulTbErrors++; }
}
void OnUlRbs(int i, uint16_t, const std::vector<int>& rbs) { g_ues[i].ulRbs += rbs.size(); }
// The UE's uplink PHY starts a transmission: with a packet burst (a MAC PDU on PUSCH) or without
// (PUCCH only). A grant the UE had no PDU for is not sent; LENA's eNB still expects its TB and,
// when another UE's signal ends a reception in that TTI, counts it as not decoded.
void OnUeTxStart(int i, Ptr<const PacketBurst> pb) { if (pb && pb->GetNPackets()) g_ues[i].ulSent++; }
void OnUePdcpTx(int i, uint16_t, uint8_t, uint32_t n) { g_ues[i].ulPdcpTxBytes += n; g_ues[i].ulPdcpTxPkts++; }
void OnUePdcpRx(int i, uint16_t, uint8_t, uint32_t n, uint64_t) { g_ues[i].dlPdcpRxBytes += n; g_ues[i].dlPdcpRxPkts++; }
void OnUeRlcTx(int i, uint16_t, uint8_t, uint32_t n) { g_ues[i].ulRlcTxBytes += n; }
void OnUeRlcDrop(int i, Ptr<const Packet>) { g_ues[i].ulRlcDrops++; }
void OnEnbPdcpTx(int i, uint16_t, uint8_t, uint32_t n) { g_ues[i].dlPdcpTxBytes += n; g_ues[i].dlPdcpTxPkts++; }
void OnEnbPdcpRx(int i, uint16_t, uint8_t, uint32_t n, uint64_t delayNs) {
  g_ues[i].ulPdcpRxBytes += n; g_ues[i].ulPdcpRxPkts++; g_ues[i].ulPdcpDelayNs += delayNs;
}
void OnEnbRlcDrop(int i, Ptr<const Packet>) { g_ues[i].dlRlcDrops++; }

Ptr<LteDataRadioBearerInfo> FirstDrb(Ptr<Object> rrc) {
  ObjectMapValue drbs;
  rrc->GetAttribute("DataRadioBearerMap", drbs);
  if (drbs.GetN() == 0) return nullptr;
  return DynamicCast<LteDataRadioBearerInfo>(drbs.Begin()->second);
}

void Tick() {
  SampleLateness();
  Simulator::Schedule(MilliSeconds(1), &Tick);
}

void WriteStats() {
  FILE* f = BeginStats(g_statsPath);
  if (f) {
    std::fprintf(f, ", \"ul_rbs\": %u, \"devices\": {", g_enbDev->GetUlBandwidth());
    for (size_t i = 0; i < g_ues.size(); ++i) {
      const Ue& u = g_ues[i];
      std::fprintf(f, "%s\"%s\": {\"ul_grants\": %llu, \"ul_rbs\": %llu, \"ul_mcs_sum\": %llu, "
                   "\"ul_tb_bytes\": %llu, \"ul_sent\": %llu, \"ul_tbs\": %llu, \"ul_tb_errors\": %llu, "
                   "\"ul_pdcp_tx_bytes\": %llu, \"ul_pdcp_tx_pkts\": %llu, "
                   "\"ul_pdcp_rx_bytes\": %llu, \"ul_pdcp_rx_pkts\": %llu, "
                   "\"ul_pdcp_delay_ns\": %llu, \"ul_rlc_tx_bytes\": %llu, \"ul_rlc_drops\": %llu, "
                   "\"dl_pdcp_tx_bytes\": %llu, \"dl_pdcp_tx_pkts\": %llu, "
                   "\"dl_pdcp_rx_bytes\": %llu, \"dl_pdcp_rx_pkts\": %llu, \"dl_rlc_drops\": %llu}",
                   i ? ", " : "", u.name.c_str(), (unsigned long long)u.ulGrants,
                   (unsigned long long)u.ulRbs, (unsigned long long)u.ulMcsSum,
                   (unsigned long long)u.ulTbBytes, (unsigned long long)u.ulSent,
                   (unsigned long long)u.ulTbs,
                   (unsigned long long)u.ulTbErrors, (unsigned long long)u.ulPdcpTxBytes,
                   (unsigned long long)u.ulPdcpTxPkts, (unsigned long long)u.ulPdcpRxBytes,
                   (unsigned long long)u.ulPdcpRxPkts, (unsigned long long)u.ulPdcpDelayNs,
                   (unsigned long long)u.ulRlcTxBytes, (unsigned long long)u.ulRlcDrops,
                   (unsigned long long)u.dlPdcpTxBytes, (unsigned long long)u.dlPdcpTxPkts,
                   (unsigned long long)u.dlPdcpRxBytes, (unsigned long long)u.dlPdcpRxPkts,
                   (unsigned long long)u.dlRlcDrops);
    }
    std::fprintf(f, "}");
    EndStats(f, g_statsPath);
  }
  Simulator::Schedule(MilliSeconds(g_statsPeriodMs), &WriteStats);
}

// Ready once every UE is connected (RRC and NAS) and its data radio bearer exists at the UE and
// at the eNB (the EPC created the session, so the PGW knows the bearer); then the per-bearer
// RLC and PDCP traces are connected.
void CheckReady() {
  Ptr<LteEnbRrc> enbRrc = g_enbDev->GetRrc();
  for (auto& u : g_ues) {
    Ptr<LteUeRrc> rrc = u.dev->GetRrc();
    if (rrc->GetState() != LteUeRrc::CONNECTED_NORMALLY ||
        u.dev->GetNas()->GetState() != EpcUeNas::ACTIVE || !enbRrc->HasUeManager(rrc->GetRnti()) ||
        enbRrc->GetUeManager(rrc->GetRnti())->GetState() != UeManager::CONNECTED_NORMALLY ||
        !FirstDrb(rrc) || !FirstDrb(enbRrc->GetUeManager(rrc->GetRnti()))) {
      Simulator::Schedule(MilliSeconds(10), &CheckReady);
      return;
    }
  }
  for (size_t i = 0; i < g_ues.size(); ++i) {
    Ue& u = g_ues[i];
    int k = (int)i;
    u.rnti = u.dev->GetRrc()->GetRnti();
    g_byRnti[u.rnti] = k;
    Ptr<LteDataRadioBearerInfo> ue = FirstDrb(u.dev->GetRrc());
    Ptr<LteDataRadioBearerInfo> enb = FirstDrb(enbRrc->GetUeManager(u.rnti));
    Connect(ue->m_pdcp, "TxPDU", MakeBoundCallback(&OnUePdcpTx, k));
    Connect(ue->m_pdcp, "RxPDU", MakeBoundCallback(&OnUePdcpRx, k));
    Connect(ue->m_rlc, "TxPDU", MakeBoundCallback(&OnUeRlcTx, k));
    Connect(ue->m_rlc, "TxDrop", MakeBoundCallback(&OnUeRlcDrop, k));
    Connect(enb->m_pdcp, "TxPDU", MakeBoundCallback(&OnEnbPdcpTx, k));
    Connect(enb->m_pdcp, "RxPDU", MakeBoundCallback(&OnEnbPdcpRx, k));
    Connect(enb->m_rlc, "TxDrop", MakeBoundCallback(&OnEnbRlcDrop, k));
  }
  g_ready = true;
  std::printf("READY {\"sim_s\": %.6f, \"ul_rbs\": %u, \"dl_rbs\": %u, \"devices\": {",
              Simulator::Now().GetSeconds(), g_enbDev->GetUlBandwidth(),
              g_enbDev->GetDlBandwidth());
  for (size_t i = 0; i < g_ues.size(); ++i) {
    const Ue& u = g_ues[i];
    Ptr<Ipv4> ip = u.node->GetObject<Ipv4>();
    std::ostringstream lteAddr;
    lteAddr << ip->GetAddress(ip->GetInterfaceForDevice(u.dev), 0).GetLocal();
    std::printf("%s\"%s\": {\"imsi\": %llu, \"rnti\": %u, \"lte_address\": \"%s\"}", i ? ", " : "",
                u.name.c_str(), (unsigned long long)u.dev->GetImsi(), u.rnti,
                lteAddr.str().c_str());
  }
  std::printf("}}\n");
  std::fflush(stdout);
}

void Finish(const std::string& wireNet, const std::string& statsPath, int statsPeriodMs) {
  g_statsPath = statsPath;
  g_statsPeriodMs = statsPeriodMs;
  NodeContainer ueNodes;
  for (auto& u : g_ues) ueNodes.Add(u.node);
  MobilityHelper mob;
  Ptr<ListPositionAllocator> pos = CreateObject<ListPositionAllocator>();
  pos->Add(Vector(0, 0, 0));
  for (size_t i = 0; i < g_ues.size(); ++i) {
    double a = 2 * M_PI * i / g_ues.size();
    pos->Add(Vector(g_ues[i].distance * std::cos(a), g_ues[i].distance * std::sin(a), 0));
  }
  mob.SetPositionAllocator(pos);
  mob.SetMobilityModel("ns3::ConstantPositionMobilityModel");
  mob.Install(g_enb);
  mob.Install(ueNodes);

  NetDeviceContainer enbDevs = g_lte->InstallEnbDevice(g_enb);
  NetDeviceContainer ueDevs = g_lte->InstallUeDevice(ueNodes);
  g_enbDev = DynamicCast<LteEnbNetDevice>(enbDevs.Get(0));
  g_epc->AssignUeIpv4Address(ueDevs);
  Ipv4StaticRoutingHelper srh;
  for (size_t i = 0; i < g_ues.size(); ++i) {
    Ue& u = g_ues[i];
    u.dev = DynamicCast<LteUeNetDevice>(ueDevs.Get(i));
    u.imsi = u.dev->GetImsi();
    Ptr<Ipv4> ip = u.node->GetObject<Ipv4>();
    srh.GetStaticRouting(ip)->SetDefaultRoute(g_epc->GetUeDefaultGatewayAddress(),
                                              ip->GetInterfaceForDevice(u.dev));
  }
  g_lte->Attach(ueDevs, enbDevs.Get(0));

  // The ES behind the PGW, as the WiFi mode has it behind the AP.
  Ptr<Node> pgw = g_epc->GetPgwNode();
  PointToPointHelper p2p;
  p2p.SetDeviceAttribute("DataRate", StringValue("1Gbps"));
  p2p.SetChannelAttribute("Delay", StringValue("0ms"));
  NetDeviceContainer wire = p2p.Install(pgw, g_wired.Get(0));
  Ipv4AddressHelper wireNetHelper;
  wireNetHelper.SetBase(Ipv4Address(wireNet.c_str()), Ipv4Mask("/30"));
  Ipv4InterfaceContainer wireIf = wireNetHelper.Assign(wire);
  Ptr<Ipv4> wip = g_wired.Get(0)->GetObject<Ipv4>();
  srh.GetStaticRouting(wip)->SetDefaultRoute(wireIf.GetAddress(0),
                                             wip->GetInterfaceForDevice(wire.Get(1)));
  Ptr<Ipv4> pip = pgw->GetObject<Ipv4>();
  Ptr<Ipv4StaticRouting> pgwRoutes = srh.GetStaticRouting(pip);
  for (const auto& w : g_wiredNet) {
    pgwRoutes->AddNetworkRouteTo(Ipv4Address(w.substr(0, w.find('/')).c_str()),
                                 Ipv4Mask(w.substr(w.find('/')).c_str()), wireIf.GetAddress(1),
                                 pip->GetInterfaceForDevice(wire.Get(0)));
  }

  // Downlink to the namespaces' own addresses: PGW route to its tun device, PGW's by-address
  // map to the UE's bearer.
  int32_t tunIf = -1;
  for (uint32_t d = 0; d < pgw->GetNDevices(); ++d) {
    if (DynamicCast<VirtualNetDevice>(pgw->GetDevice(d))) tunIf = pip->GetInterfaceForDevice(pgw->GetDevice(d));
  }
  Ptr<EpcPgwApplication> pgwApp;
  for (uint32_t a = 0; a < pgw->GetNApplications(); ++a) {
    if (DynamicCast<EpcPgwApplication>(pgw->GetApplication(a))) pgwApp = DynamicCast<EpcPgwApplication>(pgw->GetApplication(a));
  }
  if (tunIf < 0 || !pgwApp) NS_FATAL_ERROR("the PGW node has no tun device or no EpcPgwApplication");
  for (auto& u : g_ues) {
    pgwRoutes->AddHostRouteTo(Ipv4Address(u.hostAddr.c_str()), tunIf);
    pgwApp->SetUeAddress(u.imsi, Ipv4Address(u.hostAddr.c_str()));
  }

  Connect(g_enbDev->GetMac(), "UlScheduling", MakeCallback(&OnUlScheduling));
  Connect(g_enbDev->GetPhy()->GetUlSpectrumPhy(), "UlPhyReception", MakeCallback(&OnUlReception));
  for (size_t i = 0; i < g_ues.size(); ++i) {
    Connect(g_ues[i].dev->GetPhy(), "ReportUlPhyResourceBlocks",
            MakeBoundCallback(&OnUlRbs, (int)i));
    Connect(g_ues[i].dev->GetPhy()->GetUlSpectrumPhy(), "TxStart",
            MakeBoundCallback(&OnUeTxStart, (int)i));
  }
  Simulator::Schedule(MilliSeconds(1), &Tick);
  Simulator::Schedule(MilliSeconds(10), &CheckReady);
  Simulator::Schedule(MilliSeconds(g_statsPeriodMs), &WriteStats);
}

void Run() { Simulator::Run(); }
}  // namespace tblte
"""


def _build(sim: Any, cfg: dict[str, Any], fds: dict[str, int]) -> None:
    sim.Init(int(cfg["seed"]), cfg["scheduler_type"], int(cfg["ul_rbs"]), int(cfg["dl_rbs"]),
             int(cfg["p0_nominal_pusch_dbm"]), int(cfg["rlc_buffer_bytes"]))
    for h in cfg["ues"]:
        sim.AddUe(h["name"], fds[h["name"]], h["gateway"], int(h["prefixlen"]), h["address"],
                  float(h["distance_m"]))
    for h in cfg["wired"]:
        sim.AddWired(fds[h["name"]], h["gateway"], int(h["prefixlen"]), h["network"])
    sim.Finish(cfg["wire_network"], cfg["stats_path"], int(cfg["stats_period_ms"]))


def main(argv: list[str]) -> int:
    return simulator_main(argv, "testbed.lab.ns3_lte_sim", "lte", "ues", CPP, "tblte", _build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
