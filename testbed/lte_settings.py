"""LTE settings of a real lab (``lab.radio``, a host's ``radio``) and their checks (pure).

``lab.radio`` of a real LTE lab (every key optional)::

    mcc: '001'            # quoted: YAML reads 001 as the number 1
    mnc: '01'
    apn: internet
    tac: 7
    enb_id: 411           # 20 bits (0x19B)
    cell_id: 1
    pci: 1
    dl_earfcn: 3350       # band 7
    n_prb: 50             # 6, 15, 25, 50, 75 or 100
    qci: 9                # default bearer: 9 (RLC AM) or 7 (RLC UM)
    device_name: uhd      # default SDR driver: uhd, zmq, soapy, bladerf or auto
    sgi_address: 172.16.0.1   # the EPC's SGi address; UEs get .2, .3, ... (static, per UE)
    enb_tx_gain: 80
    enb_rx_gain: 40
    ue_tx_gain: 80
    ue_rx_gain: null      # null: AGC
    zmq_base_port: 2000   # ZeroMQ: eNB tx on this port, UE tx on the next
    attach_timeout_s: 90

A host's own ``radio`` mapping (``device_name``, ``device_args``, ``tx_gain``, ``rx_gain``,
``time_adv_nsamples``) overrides these for its SDR, e.g. ``device_args: type=b200,serial=XXXX``.

``testbed.srsran_files`` makes srsRAN's configuration files from these settings and
``testbed.lte_link`` runs them on the lab's hosts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from testbed.checks import Checker, Section

N_PRB = (6, 15, 25, 50, 75, 100)
DEVICES = ("uhd", "zmq", "soapy", "bladerf", "auto")
QCIS = (7, 9)
MCC_RE = re.compile(r"^\d{3}$")
MNC_RE = re.compile(r"^\d{2,3}$")
APN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
ARGS_RE = re.compile(r"^[^\s'\"]*$")
SETTING_KEYS = ("mcc", "mnc", "apn", "tac", "enb_id", "cell_id", "pci", "dl_earfcn", "n_prb", "qci",
                "device_name", "sgi_address", "enb_tx_gain", "enb_rx_gain", "ue_tx_gain",
                "ue_rx_gain", "zmq_base_port", "attach_timeout_s")
HOST_RADIO_KEYS = ("device_name", "device_args", "tx_gain", "rx_gain", "time_adv_nsamples")


@dataclass(frozen=True)
class LteSettings:
    mcc: str = "001"
    mnc: str = "01"
    apn: str = "internet"
    tac: int = 7
    enb_id: int = 0x19B
    cell_id: int = 1
    pci: int = 1
    dl_earfcn: int = 3350
    n_prb: int = 50
    qci: int = 9
    device_name: str = "uhd"
    sgi_address: str = "172.16.0.1"
    enb_tx_gain: float = 80.0
    enb_rx_gain: float = 40.0
    ue_tx_gain: float = 80.0
    ue_rx_gain: float | None = None
    zmq_base_port: int = 2000
    attach_timeout_s: float = 90.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def ue_address(self, k: int) -> str:
        """The static address of the k-th UE (0-based) in the SGi /24."""
        net = ipaddress.IPv4Interface(f"{self.sgi_address}/24").network
        sgi = ipaddress.IPv4Address(self.sgi_address)
        pool = [a for a in net.hosts() if a != sgi]
        return str(pool[k])


def parse_settings(ck: Checker, raw: Any, path: str = "lab.radio") -> LteSettings | None:
    """``lab.radio`` of an LTE lab (``None``: every default); ``None`` after recording errors."""
    f = Section(ck, raw, path, SETTING_KEYS, "LTE settings")
    d = LteSettings()
    values = dict(
        mcc=f.string("mcc", d.mcc, pattern=MCC_RE, what="a 3-digit mobile country code as a "
                     "quoted string, such as '001'"),
        mnc=f.string("mnc", d.mnc, pattern=MNC_RE, what="a 2- or 3-digit mobile network code as "
                     "a quoted string, such as '01'"),
        apn=f.string("apn", d.apn, pattern=APN_RE, what="an APN of letters, digits, '.', '-'"),
        tac=f.integer("tac", d.tac, minimum=0, maximum=0xFFFF),
        enb_id=f.integer("enb_id", d.enb_id, minimum=0, maximum=0xFFFFF),
        cell_id=f.integer("cell_id", d.cell_id, minimum=0, maximum=255),
        pci=f.integer("pci", d.pci, minimum=0, maximum=503),
        dl_earfcn=f.integer("dl_earfcn", d.dl_earfcn, minimum=0, maximum=65535),
        n_prb=f.integer("n_prb", d.n_prb, choices=N_PRB),
        qci=f.integer("qci", d.qci, choices=QCIS),
        device_name=f.string("device_name", d.device_name, choices=DEVICES),
        sgi_address=f.string("sgi_address", d.sgi_address, what="an IPv4 address"),
        enb_tx_gain=f.number("enb_tx_gain", d.enb_tx_gain, minimum=0, maximum=100),
        enb_rx_gain=f.number("enb_rx_gain", d.enb_rx_gain, minimum=0, maximum=100),
        ue_tx_gain=f.number("ue_tx_gain", d.ue_tx_gain, minimum=0, maximum=100),
        ue_rx_gain=f.number("ue_rx_gain", d.ue_rx_gain, minimum=0, maximum=100),
        zmq_base_port=f.integer("zmq_base_port", d.zmq_base_port, minimum=1024, maximum=65534),
        attach_timeout_s=f.number("attach_timeout_s", d.attach_timeout_s, minimum=5, maximum=900),
    )
    if f.data.get("sgi_address") is not None and isinstance(values["sgi_address"], str):
        try:
            addr = ipaddress.IPv4Address(values["sgi_address"])
            if addr.is_loopback or addr.is_multicast or int(addr) & 0xFF in (0, 255):
                raise ValueError("not a host address")
        except ValueError as exc:
            f.error("sgi_address", f"expected an IPv4 host address such as 172.16.0.1, got "
                    f"{values['sgi_address']!r} ({exc})")
    if len(values["mcc"]) + len(values["mnc"]) > 6:
        f.error("mnc", "expected MCC + MNC of at most 6 digits")
    if not f.ok:
        return None
    return LteSettings(**values)


def parse_host_radio(ck: Checker, raw: Any, path: str) -> dict[str, Any] | None:
    """A lab host's ``radio`` mapping (its SDR); ``None`` after recording errors."""
    f = Section(ck, raw, path, HOST_RADIO_KEYS, "SDR settings (device_name, device_args, gains)")
    out: dict[str, Any] = {}
    if "device_name" in f.data:
        out["device_name"] = f.string("device_name", None, choices=DEVICES)
    if "device_args" in f.data:
        out["device_args"] = f.string("device_args", None, pattern=ARGS_RE,
                                      what="driver arguments without spaces, such as "
                                      "type=b200,serial=3123ABC")
    for key in ("tx_gain", "rx_gain"):
        if key in f.data:
            out[key] = f.number(key, None, minimum=0, maximum=100)
    if "time_adv_nsamples" in f.data:
        out["time_adv_nsamples"] = f.integer("time_adv_nsamples", None, minimum=0, maximum=10000)
    if not f.ok:
        return None
    return {k: v for k, v in out.items() if v is not None}
