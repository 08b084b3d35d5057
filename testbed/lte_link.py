"""A real LTE link: srsepc, srsenb and srsue started on the lab's hosts over SSH.

Layout (the paper's Section V-D): the ``enb`` host runs srsepc (MME, HSS, S/P-GW; its SGi tun
is ``interfaces.sgi``, default ``srs_spgw_sgi``) and srsenb; every ``md``, ``ext`` and ``ue`` host
runs srsue (tun ``interfaces.lte``, default ``tun_srsue``). The ES is either the eNB's machine (it
is then reached at the SGi address) or a wired host on the eNB's network (``interfaces.lab`` /
``data``; the eNB routes, the UEs send to it through their tun).

The settings come from ``testbed.lte_settings``, the files from ``testbed.srsran_files``. Readiness
is read from the programs' own output (``SP-GW Initialized``, ``eNodeB started``, ``Network attach
successful``); per load step the link records the last row of each metrics CSV.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import Any, Callable

from testbed.inventory import data_interface, same_machine
from testbed.lte_settings import LteSettings
from testbed.realnode import (Daemon, Node, RealLabError, add_route, call_all, enable_forwarding,
                              redact)
from testbed.srsran_files import (DEFAULT_SGI_TUN, DEFAULT_UE_TUN, RELEASE, Subscriber, enb_conf,
                                  epc_conf, rb_conf, rr_conf, sib_conf, ue_conf, user_db)

log = logging.getLogger(__name__)

ZMQ_BASE_SRATE = "23.04e6"

EPC_READY = re.compile(r"SP-GW Initialized")
ENB_READY = re.compile(r"==== eNodeB started ===")
ATTACHED = re.compile(r"Network attach successful\. IP: (\d+\.\d+\.\d+\.\d+)")


def parse_metrics_csv(text: str) -> dict[str, Any]:
    """The last row of an srsRAN metrics CSV (``;``-separated, header first) as a dict."""
    rows = [ln for ln in text.splitlines() if ln.strip()]
    if len(rows) < 2:
        return {}
    header = rows[0].split(";")
    values = rows[-1].split(";")
    out: dict[str, Any] = {}
    for key, value in zip(header, values):
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


class LteLink:
    """srsepc + srsenb on the eNB host, srsue on every UE host; undone by down()."""

    kind = "lte"

    def __init__(self, scenario, nodes: dict[str, Node], workdir: str, run_dir: Path,
                 run_id: str = ""):
        self.scenario = scenario
        self.settings: LteSettings = scenario.lab.radio or LteSettings()
        self.nodes = nodes
        self.workdir = workdir
        self.dir = f"{workdir}/srsran"
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.enb = nodes[scenario.host("enb").name]
        self.ues = [nodes[h.name] for h in scenario.lab.hosts if h.role in ("md", "ext", "ue")]
        self.subscribers = {n.name: Subscriber.new(self.settings, n.name, k)
                            for k, n in enumerate(self.ues)}
        self._addresses: dict[str, str] = {}
        self._undo: list[Callable[[], Any]] = []
        self._notes: list[str] = []

    # ---- radio of each host
    def _radio(self, node: Node, ue: bool) -> dict[str, Any]:
        s = self.settings
        own = node.spec.radio
        device = own.get("device_name", s.device_name)
        args = own.get("device_args")
        if args is None and device == "zmq":
            args = self._zmq_args(node, ue)
        return {"device_name": device, "device_args": args,
                "tx_gain": own.get("tx_gain", s.ue_tx_gain if ue else s.enb_tx_gain),
                "rx_gain": own.get("rx_gain", s.ue_rx_gain if ue else s.enb_rx_gain),
                "time_adv": own.get("time_adv_nsamples")}

    def _zmq_args(self, node: Node, ue: bool) -> str:
        """ZeroMQ ports for one eNB and one UE (more UEs need a broker and explicit args)."""
        if len(self.ues) != 1:
            raise RealLabError("the ZeroMQ virtual radio joins one eNB and one UE: with "
                           f"{len(self.ues)} UEs give every host radio.device_args for a broker "
                           "(e.g. a GNU Radio flowgraph)")
        p = self.settings.zmq_base_port
        enb, ue_node = self.enb, self.ues[0]
        local = same_machine(enb.spec, ue_node.spec)
        if ue:
            peer = "localhost" if local else enb.spec.address
            return f"tx_port=tcp://*:{p + 1},rx_port=tcp://{peer}:{p},id=ue,base_srate={ZMQ_BASE_SRATE}"
        peer = "localhost" if local else ue_node.spec.address
        return (f"fail_on_disconnect=true,tx_port=tcp://*:{p},rx_port=tcp://{peer}:{p + 1},"
                f"id=enb,base_srate={ZMQ_BASE_SRATE}")

    def _tun(self, node: Node) -> str:
        return node.spec.interfaces.get("lte", DEFAULT_UE_TUN)

    def configs(self) -> dict[str, str]:
        """Every generated file: ``<host>:<name>`` -> text (with this run's secrets)."""
        s, d = self.settings, self.dir
        out = {
            f"{self.enb.name}:epc.conf": epc_conf(
                s, d, sgi_if=self.enb.spec.interfaces.get("sgi", DEFAULT_SGI_TUN), run=self.run_id),
            f"{self.enb.name}:user_db.csv": user_db(s, list(self.subscribers.values())),
            f"{self.enb.name}:enb.conf": enb_conf(s, d, run=self.run_id,
                                                  **self._radio(self.enb, ue=False)),
            f"{self.enb.name}:rr.conf": rr_conf(s, self.run_id),
            f"{self.enb.name}:sib.conf": sib_conf(self.run_id),
            f"{self.enb.name}:rb.conf": rb_conf(self.run_id),
        }
        for node in self.ues:
            out[f"{node.name}:ue-{node.name}.conf"] = ue_conf(
                s, self.subscribers[node.name], d, tun=self._tun(node), run=self.run_id,
                **self._radio(node, ue=True))
        return out

    def _secrets(self) -> list[str]:
        return [x for sub in self.subscribers.values() for x in sub.secrets]

    # ---- bring-up
    def up(self) -> None:
        s = self.settings
        configs = self.configs()
        keep = self.run_dir / "lab"
        keep.mkdir(parents=True, exist_ok=True)
        for key, text in configs.items():
            (keep / key.split(":", 1)[1]).write_text(redact(text, self._secrets()))
        for node in [self.enb, *self.ues]:
            node.run(["mkdir", "-p", self.dir], timeout=10)
            self._undo.append(lambda n=node: n.run(["rm", "-rf", self.dir], timeout=15,
                                                   check=False, privileged=True))
        for key, text in configs.items():
            host, name = key.split(":", 1)
            self.nodes[host].put_text(text, f"{self.dir}/{name}")
        epc = self._start(self.enb, [self.enb.tool("srsepc"), f"{self.dir}/epc.conf"], "srsepc")
        epc.wait_for(EPC_READY, 30, "SP-GW Initialized")
        enb = self._start(self.enb, [self.enb.tool("srsenb"), f"{self.dir}/enb.conf"], "srsenb")
        enb.wait_for(ENB_READY, 90, "'eNodeB started'")
        self._addresses[self.enb.name] = s.sgi_address
        for node in self.ues:
            ue = self._start(node, [node.tool("srsue"), f"{self.dir}/ue-{node.name}.conf"],
                             f"srsue-{node.name}")
            m = ue.wait_for(ATTACHED, s.attach_timeout_s, "'Network attach successful'")
            address = m.group(1)
            planned = self.subscribers[node.name].address
            if address != planned:
                self._notes.append(f"{node.name}: attached with {address}, planned {planned}")
            self._addresses[node.name] = address
            log.info("%s: attached, tun %s %s", node.name, self._tun(node), address)
        self._place_es()

    def _start(self, node: Node, argv: list[str], name: str) -> Daemon:
        d = node.start_daemon(argv, name, self.workdir)
        self._undo.append(lambda: (d.stop(grace=8), d.fetch_logs(self.run_dir / "logs")))
        return d

    def _place_es(self) -> None:
        es_spec = self.scenario.host("es")
        es = self.nodes[es_spec.name]
        if same_machine(es_spec, self.enb.spec):
            self._addresses[es.name] = self.settings.sgi_address
            return
        ifname = data_interface(es_spec)
        enb_if = data_interface(self.enb.spec)
        if ifname is None or enb_if is None:
            raise RealLabError(f"{es.name} is not the eNB's machine: it and the eNB need "
                           "interfaces.lab (their interfaces on one wired network) so the eNB can "
                           "route between the UEs and the ES")
        es_addr = (es.ipv4(ifname) or [None])[0]
        enb_addr = (self.enb.ipv4(enb_if) or [None])[0]
        if not es_addr or not enb_addr:
            raise RealLabError(f"{es.name}/{self.enb.name}: {ifname}/{enb_if} have no IPv4 address")
        es_ip = es_addr.split("/")[0]
        self._addresses[es.name] = es_ip
        self._undo += enable_forwarding(self.enb)
        ue_net = str(ipaddress.IPv4Interface(f"{self.settings.sgi_address}/24").network)
        self._undo += add_route(es, ue_net, enb_addr.split("/")[0], None)
        for node in self.ues:
            self._undo += add_route(node, f"{es_ip}/32", None, self._tun(node))

    def address(self, name: str) -> str:
        return self._addresses[name]

    # ---- per step
    def radio_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in self.ues:
            text = node.read(f"{self.dir}/ue-{node.name}-metrics.csv")
            out[node.name] = parse_metrics_csv(text) or {"error": "no metrics yet"}
        out[self.enb.name] = parse_metrics_csv(self.enb.read(f"{self.dir}/enb_metrics.csv")) or {
            "error": "no metrics yet"}
        return out

    def down(self) -> list[str]:
        undo, self._undo = self._undo[::-1], []
        return call_all(undo)

    def manifest(self) -> dict[str, Any]:
        return {
            "kind": "lte",
            "srsran_release_followed": RELEASE,
            "settings": self.settings.to_dict(),
            "enb": self.enb.name,
            "ues": {n.name: {"imsi_prefix": self.settings.mcc + self.settings.mnc,
                             "tun": self._tun(n), "address": self._addresses.get(n.name)}
                    for n in self.ues},
            "radios": {n.name: {k: v for k, v in self._radio(n, n is not self.enb).items()
                                if k in ("device_name", "device_args")}
                       for n in [self.enb, *self.ues]} if self._radios_ok() else {},
            "addresses": dict(self._addresses),
            "credentials": "per-run IMSI/K/OPc (Milenage), not recorded",
            "notes": list(self._notes),
            "configs": "lab/*.conf and lab/user_db.csv (keys redacted)",
        }

    def _radios_ok(self) -> bool:
        try:
            self._radio(self.enb, False)
            return True
        except RealLabError:
            return False
