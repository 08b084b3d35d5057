"""srsRAN 4G's configuration files, made from a run's LTE settings and subscribers (pure).

Followed release: srsRAN 4G ``release_23_11`` (its example files ``srsenb/enb.conf.example``,
``rr.conf.example``, ``sib.conf.example``, ``rb.conf.example``, ``srsepc/epc.conf.example``,
``user_db.csv.example`` and ``srsue/ue.conf.example`` give the sections and option names used
here; ``tests/test_lte_configs.py`` keeps the list of names this module relies on). The files
are generated from the values below, not copied.

Each run makes new subscriber credentials (IMSI, K, OPc, IMEI; Milenage) for every UE; they go to
the HSS database and the UEs' ``[usim]`` sections only, never to a manifest, and the copies kept in
the result folder have them replaced.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from testbed.lte_settings import LteSettings

RELEASE = "release_23_11"
"""The srsRAN 4G release whose example configurations this module follows."""

DEFAULT_UE_TUN = "tun_srsue"
DEFAULT_SGI_TUN = "srs_spgw_sgi"
MME_ADDR = "127.0.1.100"
ENB_ADDR = "127.0.1.1"


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
