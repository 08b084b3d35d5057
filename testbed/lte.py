"""LTE over srsRAN 4G: settings, generated configurations and the link's life on real hosts.

Followed release: srsRAN 4G ``release_23_11`` (its example files ``srsenb/enb.conf.example``,
``rr.conf.example``, ``sib.conf.example``, ``rb.conf.example``, ``srsepc/epc.conf.example``,
``user_db.csv.example`` and ``srsue/ue.conf.example`` give the sections and option names used
here; ``tests/test_lte_configs.py`` keeps the list of names this module relies on). The files
are generated from the values below, not copied.

Layout (the paper's Section V-D): the ``enb`` host runs srsepc (MME, HSS, S/P-GW; its SGi tun
is ``interfaces.sgi``, default ``srs_spgw_sgi``) and srsenb; every ``md``, ``ext`` and ``ue`` host
runs srsue (tun ``interfaces.lte``, default ``tun_srsue``). The ES is either the eNB's machine (it
is then reached at the SGi address) or a wired host on the eNB's network (``interfaces.lab`` /
``data``; the eNB routes, the UEs send to it through their tun).

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

Each run makes new subscriber credentials (IMSI, K, OPc, IMEI; Milenage) for every UE; they go to
the HSS database and the UEs' ``[usim]`` sections only, never to a manifest, and the copies kept in
the result folder have them replaced.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from testbed.inventory import (Daemon, Fields, LabError, Node, Problems, add_route, call_all,
                               data_interface, enable_forwarding, redact, same_machine)

log = logging.getLogger(__name__)

RELEASE = "release_23_11"
"""The srsRAN 4G release whose example configurations this module follows."""

N_PRB = (6, 15, 25, 50, 75, 100)
DEVICES = ("uhd", "zmq", "soapy", "bladerf", "auto")
QCIS = (7, 9)
MCC_RE = re.compile(r"^\d{3}$")
MNC_RE = re.compile(r"^\d{2,3}$")
APN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
ARGS_RE = re.compile(r"^[^\s'\"]*$")
DEFAULT_UE_TUN = "tun_srsue"
DEFAULT_SGI_TUN = "srs_spgw_sgi"
MME_ADDR = "127.0.1.100"
ENB_ADDR = "127.0.1.1"
ZMQ_BASE_SRATE = "23.04e6"

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


def parse_settings(raw: Any) -> tuple[LteSettings | None, Problems]:
    f = Fields(raw, SETTING_KEYS, "LTE settings")
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
        return None, f.problems
    return LteSettings(**values), f.problems


def parse_host_radio(raw: Any) -> tuple[dict[str, Any] | None, Problems]:
    f = Fields(raw, HOST_RADIO_KEYS, "SDR settings (device_name, device_args, gains)")
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
        return None, f.problems
    return {k: v for k, v in out.items() if v is not None}, f.problems


# --------------------------------------------------------------------------- credentials


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return str((10 - total % 10) % 10)


@dataclass(frozen=True)
class Subscriber:
    """One UE's per-run USIM: IMSI, Milenage K and OPc, IMEI and its static address."""

    name: str
    imsi: str
    k: str
    opc: str
    imei: str
    address: str

    @classmethod
    def new(cls, s: LteSettings, name: str, k_index: int) -> "Subscriber":
        msin_len = 15 - len(s.mcc) - len(s.mnc)
        msin = "".join(secrets.choice("0123456789") for _ in range(msin_len))
        body = "35" + "".join(secrets.choice("0123456789") for _ in range(12))
        return cls(name=name, imsi=s.mcc + s.mnc + msin, k=secrets.token_hex(16),
                   opc=secrets.token_hex(16), imei=body + _luhn_digit(body),
                   address=s.ue_address(k_index))

    @property
    def secrets(self) -> list[str]:
        return [self.k, self.opc, self.k.upper(), self.opc.upper()]


# --------------------------------------------------------------------------- file formats


def ini(sections: dict[str, dict[str, Any]], header: str) -> str:
    """srsRAN's INI-style files (boost program_options): ``[section]`` then ``key = value``."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, options in sections.items():
        out += ["", f"[{name}]"]
        for key, value in options.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, float):
                value = f"{value:g}"
            out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"


class Hex(int):
    """An integer written in hexadecimal in libconfig files."""


def _lc_value(value: Any, indent: str) -> str:
    inner = indent + "  "
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Hex):
        return f"0x{int(value):X}"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        body = "".join(f"{inner}{k} = {_lc_value(v, inner)};\n" for k, v in value.items())
        return "{\n" + body + indent + "}"
    if isinstance(value, tuple):  # an array of scalars
        return "[" + ", ".join(_lc_value(v, inner) for v in value) + "]"
    if isinstance(value, list):  # a list of groups
        if not value:
            return "()"
        return "(\n" + ",\n".join(inner + _lc_value(v, inner) for v in value) + "\n" + indent + ")"
    raise TypeError(f"no libconfig form for {value!r}")


def libconfig(settings: dict[str, Any], header: str) -> str:
    """srsenb's rr/sib/rb files (libconfig): groups ``{}``, lists ``()``, arrays ``[]``."""
    out = [f"// {line}".rstrip() for line in header.splitlines()]
    for key, value in settings.items():
        out += ["", f"{key} = {_lc_value(value, '')};"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- configurations


def _header(what: str, run: str) -> str:
    return (f"srsRAN 4G {what} made by the HND testbed{f' for run {run}' if run else ''}.\n"
            f"Sections and options as in srsRAN 4G {RELEASE}'s example files.")


def epc_conf(s: LteSettings, workdir: str, *, sgi_if: str = DEFAULT_SGI_TUN, run: str = "") -> str:
    return ini({
        "mme": {
            "mme_code": "0x1a", "mme_group": "0x0001", "tac": f"0x{s.tac:04x}", "mcc": s.mcc,
            "mnc": s.mnc, "mme_bind_addr": MME_ADDR, "apn": s.apn, "dns_addr": s.sgi_address,
            "encryption_algo": "EEA0", "integrity_algo": "EIA1", "paging_timer": 2,
            "request_imeisv": False, "lac": "0x0006",
        },
        "hss": {"db_file": f"{workdir}/user_db.csv"},
        "spgw": {"gtpu_bind_addr": MME_ADDR, "sgi_if_addr": s.sgi_address, "sgi_if_name": sgi_if,
                 "max_paging_queue": 100},
        "pcap": {"enable": False, "filename": f"{workdir}/epc.pcap"},
        "log": {"all_level": "info", "all_hex_limit": 32, "filename": f"{workdir}/epc.log"},
    }, _header("EPC configuration", run))


def user_db(s: LteSettings, subscribers: list[Subscriber]) -> str:
    """The HSS database: ``Name,Auth,IMSI,Key,OP_Type,OP/OPc,AMF,SQN,QCI,IP_alloc`` per UE."""
    lines = ["# HSS database made by the HND testbed: per-run subscribers (Milenage, OPc).",
             "# Name,Auth,IMSI,Key,OP_Type,OP/OPc,AMF,SQN,QCI,IP_alloc"]
    for sub in subscribers:
        lines.append(",".join([sub.name, "mil", sub.imsi, sub.k, "opc", sub.opc, "8000",
                               "000000000001", str(s.qci), sub.address]))
    return "\n".join(lines) + "\n"


def _rf(device_name: str, device_args: str | None, tx_gain: float, rx_gain: float | None,
        time_adv: int | None) -> dict[str, Any]:
    return {"device_name": device_name, "device_args": device_args, "tx_gain": tx_gain,
            "rx_gain": rx_gain, "time_adv_nsamples": time_adv}


def enb_conf(s: LteSettings, workdir: str, *, device_name: str, device_args: str | None,
             tx_gain: float, rx_gain: float | None, time_adv: int | None = None,
             run: str = "") -> str:
    return ini({
        "enb": {"enb_id": f"0x{s.enb_id:X}", "mcc": s.mcc, "mnc": s.mnc, "mme_addr": MME_ADDR,
                "gtp_bind_addr": ENB_ADDR, "s1c_bind_addr": ENB_ADDR, "s1c_bind_port": 0,
                "n_prb": s.n_prb},
        "enb_files": {"sib_config": f"{workdir}/sib.conf", "rr_config": f"{workdir}/rr.conf",
                      "rb_config": f"{workdir}/rb.conf"},
        "rf": _rf(device_name, device_args, tx_gain, rx_gain, time_adv),
        "pcap": {"enable": False},
        "log": {"all_level": "warning", "all_hex_limit": 32, "filename": f"{workdir}/enb.log",
                "file_max_size": -1},
        "gui": {"enable": False},
        "expert": {"metrics_csv_enable": True, "metrics_period_secs": 1,
                   "metrics_csv_filename": f"{workdir}/enb_metrics.csv"},
    }, _header("eNodeB configuration", run))


def rr_conf(s: LteSettings, run: str = "") -> str:
    return libconfig({
        "mac_cnfg": {
            "phr_cnfg": {"dl_pathloss_change": "dB3", "periodic_phr_timer": 50,
                         "prohibit_phr_timer": 0},
            "ulsch_cnfg": {"max_harq_tx": 4, "periodic_bsr_timer": 20, "retx_bsr_timer": 320},
            "time_alignment_timer": -1,
        },
        "phy_cnfg": {
            "phich_cnfg": {"duration": "Normal", "resources": "1/6"},
            "pusch_cnfg_ded": {"beta_offset_ack_idx": 6, "beta_offset_ri_idx": 6,
                               "beta_offset_cqi_idx": 6},
            "sched_request_cnfg": {"dsr_trans_max": 64, "period": 20, "nof_prb": 1},
            "cqi_report_cnfg": {"mode": "periodic", "simultaneousAckCQI": True, "period": 40,
                                "m_ri": 8},
        },
        "cell_list": [{
            "cell_id": Hex(s.cell_id), "tac": Hex(s.tac), "pci": s.pci, "dl_earfcn": s.dl_earfcn,
            "ho_active": False, "scell_list": [],
        }],
        "nr_cell_list": [],
    }, _header("radio resources (rr.conf)", run))


def sib_conf(run: str = "") -> str:
    return libconfig({
        "sib1": {
            "intra_freq_reselection": "Allowed", "q_rx_lev_min": -65, "cell_barred": "NotBarred",
            "si_window_length": 20,
            "sched_info": [{"si_periodicity": 16, "si_mapping_info": (3,)}],
            "system_info_value_tag": 0,
        },
        "sib2": {
            "rr_config_common_sib": {
                "rach_cnfg": {"num_ra_preambles": 52, "preamble_init_rx_target_pwr": -104,
                              "pwr_ramping_step": 6, "preamble_trans_max": 10,
                              "ra_resp_win_size": 10, "mac_con_res_timer": 64,
                              "max_harq_msg3_tx": 4},
                "bcch_cnfg": {"modification_period_coeff": 16},
                "pcch_cnfg": {"default_paging_cycle": 32, "nB": "1"},
                "prach_cnfg": {"root_sequence_index": 128, "prach_cnfg_info": {
                    "high_speed_flag": False, "prach_config_index": 3, "prach_freq_offset": 4,
                    "zero_correlation_zone_config": 5}},
                "pdsch_cnfg": {"p_b": 1, "rs_power": 0},
                "pusch_cnfg": {"n_sb": 1, "hopping_mode": "inter-subframe",
                               "pusch_hopping_offset": 2, "enable_64_qam": False,
                               "ul_rs": {"cyclic_shift": 0, "group_assignment_pusch": 0,
                                         "group_hopping_enabled": False,
                                         "sequence_hopping_enabled": False}},
                "pucch_cnfg": {"delta_pucch_shift": 1, "n_rb_cqi": 1, "n_cs_an": 0,
                               "n1_pucch_an": 12},
                "ul_pwr_ctrl": {"p0_nominal_pusch": -85, "alpha": 0.7, "p0_nominal_pucch": -107,
                                "delta_flist_pucch": {"format_1": 0, "format_1b": 3,
                                                      "format_2": 1, "format_2a": 2,
                                                      "format_2b": 2},
                                "delta_preamble_msg3": 6},
                "ul_cp_length": "len1",
            },
            "ue_timers_and_constants": {"t300": 2000, "t301": 100, "t310": 200, "n310": 1,
                                        "t311": 10000, "n311": 1},
            "freqInfo": {"ul_carrier_freq_present": True, "ul_bw_present": True,
                         "additional_spectrum_emission": 1},
            "time_alignment_timer": "INFINITY",
        },
        "sib3": {
            "cell_reselection_common": {"q_hyst": 2},
            "cell_reselection_serving": {"s_non_intra_search": 3, "thresh_serving_low": 2,
                                         "cell_resel_prio": 6},
            "intra_freq_reselection": {"q_rx_lev_min": -61, "p_max": 23, "s_intra_search": 5,
                                       "presence_ant_port_1": True, "neigh_cell_cnfg": 1,
                                       "t_resel_eutra": 1},
        },
    }, _header("system information (sib.conf)", run))


def _qci(qci: int, am: bool) -> dict[str, Any]:
    if am:
        pdcp: dict[str, Any] = {"discard_timer": 150, "status_report_required": True}
        rlc: dict[str, Any] = {"ul_am": {"t_poll_retx": 120, "poll_pdu": 64, "poll_byte": 750,
                                         "max_retx_thresh": 16},
                               "dl_am": {"t_reordering": 50, "t_status_prohibit": 50}}
        lch = {"priority": 11, "prioritized_bit_rate": -1, "bucket_size_duration": 100,
               "log_chan_group": 3}
    else:
        pdcp = {"discard_timer": -1, "pdcp_sn_size": 12}
        rlc = {"ul_um": {"sn_field_length": 10},
               "dl_um": {"sn_field_length": 10, "t_reordering": 45}}
        lch = {"priority": 13, "prioritized_bit_rate": -1, "bucket_size_duration": 100,
               "log_chan_group": 2}
    return {"qci": qci, "pdcp_config": pdcp, "rlc_config": rlc, "logical_channel_config": lch,
            "enb_specific": {"dl_max_retx_thresh": 32}}


def _five_qi(five_qi: int, am: bool) -> dict[str, Any]:
    drb = {"pdcp_sn_size_ul": 18, "pdcp_sn_size_dl": 18, "discard_timer": 50,
           "integrity_protection": False, "status_report": False}
    if am:
        rlc: dict[str, Any] = {"am": {
            "ul_am": {"sn_field_len": 12, "t_poll_retx": 50, "poll_pdu": 4, "poll_byte": 3000,
                      "max_retx_thres": 4},
            "dl_am": {"sn_field_len": 12, "t_reassembly": 50, "t_status_prohibit": 50}}}
    else:
        rlc = {"um_bi_dir": {"ul_um": {"sn_field_len": 12},
                             "dl_um": {"sn_field_len": 12, "t_reassembly": 50}}}
    return {"five_qi": five_qi, "pdcp_nr_config": {"drb": drb, "t_reordering": 50},
            "rlc_config": rlc}


def rb_conf(run: str = "") -> str:
    """Bearers: QCI 7 (RLC UM) and 9 (RLC AM); srsenb also requires its 5G section."""
    return libconfig({
        "qci_config": [_qci(7, am=False), _qci(9, am=True)],
        "five_qi_config": [_five_qi(7, am=False), _five_qi(9, am=True)],
    }, _header("radio bearers (rb.conf)", run))


def ue_conf(s: LteSettings, sub: Subscriber, workdir: str, *, device_name: str,
            device_args: str | None, tx_gain: float, rx_gain: float | None,
            time_adv: int | None = None, tun: str = DEFAULT_UE_TUN, run: str = "") -> str:
    return ini({
        "rf": {"freq_offset": 0, **_rf(device_name, device_args, tx_gain, rx_gain, time_adv)},
        "rat.eutra": {"dl_earfcn": s.dl_earfcn},
        "pcap": {"enable": "none"},
        "log": {"all_level": "warning", "phy_lib_level": "none", "all_hex_limit": 32,
                "filename": f"{workdir}/ue-{sub.name}.log", "file_max_size": -1},
        "usim": {"mode": "soft", "algo": "milenage", "opc": sub.opc, "k": sub.k, "imsi": sub.imsi,
                 "imei": sub.imei},
        "nas": {"apn": s.apn, "apn_protocol": "ipv4"},
        "gw": {"ip_devname": tun, "ip_netmask": "255.255.255.0"},
        "gui": {"enable": False},
        "general": {"metrics_csv_enable": True, "metrics_period_secs": 1,
                    "metrics_csv_filename": f"{workdir}/ue-{sub.name}-metrics.csv"},
    }, _header(f"UE configuration ({sub.name})", run))


# --------------------------------------------------------------------------- the link

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
            raise LabError("the ZeroMQ virtual radio joins one eNB and one UE: with "
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
            raise LabError(f"{es.name} is not the eNB's machine: it and the eNB need "
                           "interfaces.lab (their interfaces on one wired network) so the eNB can "
                           "route between the UEs and the ES")
        es_addr = (es.ipv4(ifname) or [None])[0]
        enb_addr = (self.enb.ipv4(enb_if) or [None])[0]
        if not es_addr or not enb_addr:
            raise LabError(f"{es.name}/{self.enb.name}: {ifname}/{enb_if} have no IPv4 address")
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
        except LabError:
            return False
