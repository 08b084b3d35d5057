"""Generated srsRAN 4G configurations against srsRAN 4G's own option names.

``EXAMPLE_NAMES`` lists, per file, the sections and options this testbed writes, each of which
appears in the example file of srsRAN 4G ``release_23_11`` (srsenb/enb.conf.example,
rr.conf.example, sib.conf.example, rb.conf.example, srsepc/epc.conf.example, user_db.csv.example,
srsue/ue.conf.example; options that the examples show commented out count too). The generated
files must use only these names and must contain the ones srsRAN requires. With
``SRSRAN_4G_SRC`` pointing at a checkout of that release, the names are also looked up in the
example files themselves.
"""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

import pytest

from testbed import lte_link, lte_settings, srsran_files
from testbed.scenario import ScenarioError, parse_scenario

# (section, option) of the INI files, and dotted paths of the libconfig files, as found in the
# srsRAN 4G release_23_11 example files.
EXAMPLE_NAMES: dict[str, set[str]] = {
    "epc.conf": {
        "mme.mme_code", "mme.mme_group", "mme.tac", "mme.mcc", "mme.mnc", "mme.mme_bind_addr",
        "mme.apn", "mme.dns_addr", "mme.encryption_algo", "mme.integrity_algo",
        "mme.paging_timer", "mme.request_imeisv", "mme.lac", "hss.db_file", "spgw.gtpu_bind_addr",
        "spgw.sgi_if_addr", "spgw.sgi_if_name", "spgw.max_paging_queue", "pcap.enable",
        "pcap.filename", "log.all_level", "log.all_hex_limit", "log.filename",
    },
    "enb.conf": {
        "enb.enb_id", "enb.mcc", "enb.mnc", "enb.mme_addr", "enb.gtp_bind_addr",
        "enb.s1c_bind_addr", "enb.s1c_bind_port", "enb.n_prb", "enb_files.sib_config",
        "enb_files.rr_config", "enb_files.rb_config", "rf.tx_gain", "rf.rx_gain",
        "rf.device_name", "rf.device_args", "rf.time_adv_nsamples", "pcap.enable",
        "log.all_level", "log.all_hex_limit", "log.filename", "log.file_max_size", "gui.enable",
        "expert.metrics_csv_enable", "expert.metrics_period_secs", "expert.metrics_csv_filename",
    },
    "ue.conf": {
        "rf.freq_offset", "rf.tx_gain", "rf.rx_gain", "rf.device_name", "rf.device_args",
        "rf.time_adv_nsamples", "rat.eutra.dl_earfcn", "pcap.enable", "log.all_level",
        "log.phy_lib_level", "log.all_hex_limit", "log.filename", "log.file_max_size",
        "usim.mode", "usim.algo", "usim.opc", "usim.k", "usim.imsi", "usim.imei", "nas.apn",
        "nas.apn_protocol", "gw.ip_devname", "gw.ip_netmask", "gui.enable",
        "general.metrics_csv_enable", "general.metrics_period_secs",
        "general.metrics_csv_filename",
    },
    "rr.conf": {
        "mac_cnfg.phr_cnfg.dl_pathloss_change", "mac_cnfg.phr_cnfg.periodic_phr_timer",
        "mac_cnfg.phr_cnfg.prohibit_phr_timer", "mac_cnfg.ulsch_cnfg.max_harq_tx",
        "mac_cnfg.ulsch_cnfg.periodic_bsr_timer", "mac_cnfg.ulsch_cnfg.retx_bsr_timer",
        "mac_cnfg.time_alignment_timer", "phy_cnfg.phich_cnfg.duration",
        "phy_cnfg.phich_cnfg.resources", "phy_cnfg.pusch_cnfg_ded.beta_offset_ack_idx",
        "phy_cnfg.pusch_cnfg_ded.beta_offset_ri_idx", "phy_cnfg.pusch_cnfg_ded.beta_offset_cqi_idx",
        "phy_cnfg.sched_request_cnfg.dsr_trans_max", "phy_cnfg.sched_request_cnfg.period",
        "phy_cnfg.sched_request_cnfg.nof_prb", "phy_cnfg.cqi_report_cnfg.mode",
        "phy_cnfg.cqi_report_cnfg.simultaneousAckCQI", "phy_cnfg.cqi_report_cnfg.period",
        "phy_cnfg.cqi_report_cnfg.m_ri", "cell_list.cell_id", "cell_list.tac", "cell_list.pci",
        "cell_list.dl_earfcn", "cell_list.ho_active", "cell_list.scell_list", "nr_cell_list",
    },
    "sib.conf": {
        "sib1.intra_freq_reselection", "sib1.q_rx_lev_min", "sib1.cell_barred",
        "sib1.si_window_length", "sib1.sched_info.si_periodicity",
        "sib1.sched_info.si_mapping_info", "sib1.system_info_value_tag",
        "sib2.rr_config_common_sib.rach_cnfg.num_ra_preambles",
        "sib2.rr_config_common_sib.rach_cnfg.preamble_init_rx_target_pwr",
        "sib2.rr_config_common_sib.rach_cnfg.pwr_ramping_step",
        "sib2.rr_config_common_sib.rach_cnfg.preamble_trans_max",
        "sib2.rr_config_common_sib.rach_cnfg.ra_resp_win_size",
        "sib2.rr_config_common_sib.rach_cnfg.mac_con_res_timer",
        "sib2.rr_config_common_sib.rach_cnfg.max_harq_msg3_tx",
        "sib2.rr_config_common_sib.bcch_cnfg.modification_period_coeff",
        "sib2.rr_config_common_sib.pcch_cnfg.default_paging_cycle",
        "sib2.rr_config_common_sib.pcch_cnfg.nB",
        "sib2.rr_config_common_sib.prach_cnfg.root_sequence_index",
        "sib2.rr_config_common_sib.prach_cnfg.prach_cnfg_info.high_speed_flag",
        "sib2.rr_config_common_sib.prach_cnfg.prach_cnfg_info.prach_config_index",
        "sib2.rr_config_common_sib.prach_cnfg.prach_cnfg_info.prach_freq_offset",
        "sib2.rr_config_common_sib.prach_cnfg.prach_cnfg_info.zero_correlation_zone_config",
        "sib2.rr_config_common_sib.pdsch_cnfg.p_b", "sib2.rr_config_common_sib.pdsch_cnfg.rs_power",
        "sib2.rr_config_common_sib.pusch_cnfg.n_sb",
        "sib2.rr_config_common_sib.pusch_cnfg.hopping_mode",
        "sib2.rr_config_common_sib.pusch_cnfg.pusch_hopping_offset",
        "sib2.rr_config_common_sib.pusch_cnfg.enable_64_qam",
        "sib2.rr_config_common_sib.pusch_cnfg.ul_rs.cyclic_shift",
        "sib2.rr_config_common_sib.pusch_cnfg.ul_rs.group_assignment_pusch",
        "sib2.rr_config_common_sib.pusch_cnfg.ul_rs.group_hopping_enabled",
        "sib2.rr_config_common_sib.pusch_cnfg.ul_rs.sequence_hopping_enabled",
        "sib2.rr_config_common_sib.pucch_cnfg.delta_pucch_shift",
        "sib2.rr_config_common_sib.pucch_cnfg.n_rb_cqi",
        "sib2.rr_config_common_sib.pucch_cnfg.n_cs_an",
        "sib2.rr_config_common_sib.pucch_cnfg.n1_pucch_an",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.p0_nominal_pusch",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.alpha",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.p0_nominal_pucch",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.delta_flist_pucch.format_1",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.delta_flist_pucch.format_1b",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.delta_flist_pucch.format_2",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.delta_flist_pucch.format_2a",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.delta_flist_pucch.format_2b",
        "sib2.rr_config_common_sib.ul_pwr_ctrl.delta_preamble_msg3",
        "sib2.rr_config_common_sib.ul_cp_length",
        "sib2.ue_timers_and_constants.t300", "sib2.ue_timers_and_constants.t301",
        "sib2.ue_timers_and_constants.t310", "sib2.ue_timers_and_constants.n310",
        "sib2.ue_timers_and_constants.t311", "sib2.ue_timers_and_constants.n311",
        "sib2.freqInfo.ul_carrier_freq_present", "sib2.freqInfo.ul_bw_present",
        "sib2.freqInfo.additional_spectrum_emission", "sib2.time_alignment_timer",
        "sib3.cell_reselection_common.q_hyst", "sib3.cell_reselection_serving.s_non_intra_search",
        "sib3.cell_reselection_serving.thresh_serving_low",
        "sib3.cell_reselection_serving.cell_resel_prio",
        "sib3.intra_freq_reselection.q_rx_lev_min", "sib3.intra_freq_reselection.p_max",
        "sib3.intra_freq_reselection.s_intra_search",
        "sib3.intra_freq_reselection.presence_ant_port_1",
        "sib3.intra_freq_reselection.neigh_cell_cnfg", "sib3.intra_freq_reselection.t_resel_eutra",
    },
    "rb.conf": {
        "qci_config.qci", "qci_config.pdcp_config.discard_timer", "qci_config.pdcp_config.pdcp_sn_size",
        "qci_config.pdcp_config.status_report_required", "qci_config.rlc_config.ul_um.sn_field_length",
        "qci_config.rlc_config.dl_um.sn_field_length", "qci_config.rlc_config.dl_um.t_reordering",
        "qci_config.rlc_config.ul_am.t_poll_retx", "qci_config.rlc_config.ul_am.poll_pdu",
        "qci_config.rlc_config.ul_am.poll_byte", "qci_config.rlc_config.ul_am.max_retx_thresh",
        "qci_config.rlc_config.dl_am.t_reordering", "qci_config.rlc_config.dl_am.t_status_prohibit",
        "qci_config.logical_channel_config.priority",
        "qci_config.logical_channel_config.prioritized_bit_rate",
        "qci_config.logical_channel_config.bucket_size_duration",
        "qci_config.logical_channel_config.log_chan_group",
        "qci_config.enb_specific.dl_max_retx_thresh",
        "five_qi_config.five_qi", "five_qi_config.pdcp_nr_config.drb.pdcp_sn_size_ul",
        "five_qi_config.pdcp_nr_config.drb.pdcp_sn_size_dl",
        "five_qi_config.pdcp_nr_config.drb.discard_timer",
        "five_qi_config.pdcp_nr_config.drb.integrity_protection",
        "five_qi_config.pdcp_nr_config.drb.status_report",
        "five_qi_config.pdcp_nr_config.t_reordering",
        "five_qi_config.rlc_config.um_bi_dir.ul_um.sn_field_len",
        "five_qi_config.rlc_config.um_bi_dir.dl_um.sn_field_len",
        "five_qi_config.rlc_config.um_bi_dir.dl_um.t_reassembly",
        "five_qi_config.rlc_config.am.ul_am.sn_field_len",
        "five_qi_config.rlc_config.am.ul_am.t_poll_retx",
        "five_qi_config.rlc_config.am.ul_am.poll_pdu",
        "five_qi_config.rlc_config.am.ul_am.poll_byte",
        "five_qi_config.rlc_config.am.ul_am.max_retx_thres",
        "five_qi_config.rlc_config.am.dl_am.sn_field_len",
        "five_qi_config.rlc_config.am.dl_am.t_reassembly",
        "five_qi_config.rlc_config.am.dl_am.t_status_prohibit",
    },
}
"""Names srsRAN 4G release_23_11's example files use, for the options this testbed writes."""

REQUIRED = {
    # srsenb refuses to start without these (enb_cfg_parser.cc: required fields and sections)
    "rr.conf": {"mac_cnfg.ulsch_cnfg.max_harq_tx", "phy_cnfg.sched_request_cnfg.period",
                "phy_cnfg.cqi_report_cnfg.mode", "cell_list.cell_id", "cell_list.tac",
                "cell_list.pci", "cell_list.dl_earfcn"},
    "rb.conf": {"qci_config.qci", "five_qi_config.five_qi"},
    "sib.conf": {"sib1.sched_info.si_periodicity", "sib2.rr_config_common_sib.prach_cnfg.root_sequence_index"},
    "enb.conf": {"enb.enb_id", "enb.mcc", "enb.mnc", "enb.n_prb", "enb_files.rr_config"},
    "epc.conf": {"mme.mcc", "mme.mnc", "hss.db_file", "spgw.sgi_if_addr"},
    "ue.conf": {"usim.imsi", "usim.k", "usim.opc", "rat.eutra.dl_earfcn"},
}
USER_DB_FIELDS = ("Name", "Auth", "IMSI", "Key", "OP_Type", "OP/OPc", "AMF", "SQN", "QCI", "IP_alloc")


# --------------------------------------------------------------------------- readers


def ini_names(text: str) -> set[str]:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.read_string(text)
    return {f"{s}.{k}" for s in cp.sections() for k in cp[s]}


_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|#[^\n]*|/\*.*?\*/|[A-Za-z_][A-Za-z0-9_]*|[-+]?0x[0-9A-Fa-f]+|[-+]?[0-9.]+(?:e[-+]?\d+)?|[{}()\[\]=:;,]',
                    re.S)


def libconfig_names(text: str) -> set[str]:
    """Dotted paths of the leaf settings of a libconfig file (list elements share their list's
    path; an empty list is a leaf). Parsing it is also a syntax check: brackets must balance and
    every setting must have a value."""
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith(("//", "#", "/*"))]
    names: set[str] = set()
    pos = 0

    def take() -> str:
        nonlocal pos
        assert pos < len(tokens), "unexpected end of file"
        pos += 1
        return tokens[pos - 1]

    def settings(prefix: str, end: str | None) -> None:
        while pos < len(tokens) and tokens[pos] != end:
            name = take()
            assert re.match(r"[A-Za-z_]", name), f"expected a setting name, got {name!r}"
            assert take() in ("=", ":"), f"{name}: expected '='"
            value(f"{prefix}.{name}" if prefix else name)
            if pos < len(tokens) and tokens[pos] in (";", ","):
                take()
        if end is not None:
            assert take() == end

    def value(path: str) -> None:
        t = take()
        if t == "{":
            settings(path, "}")
        elif t == "(":
            if tokens[pos] == ")":
                names.add(path)
            while tokens[pos] != ")":
                value(path)
                if tokens[pos] == ",":
                    take()
            take()
        elif t == "[":
            names.add(path)
            while take() != "]":
                pass
        else:
            assert t not in (";", ",", "}", ")", "]", "="), f"{path} has no value"
            names.add(path)

    settings("", None)
    return names


def _link(radio=None, zmq=False, ues=("md", "ext")):
    from testbed.lab_section import LabHost

    class Spec:  # the LteLink only reads scenario.lab and scenario.host
        pass

    hosts = [LabHost("enb", "enb", "10.2.0.1", "u", host_key="ssh-ed25519 A", sudo=True,
                     radio={"device_args": "type=b200"} if not zmq else {})]
    hosts += [LabHost(n, n if n != "ue2" else "ue", f"10.2.0.{i}", "u", host_key="ssh-ed25519 A",
                      interfaces={"lte": f"tun_{n}"}) for i, n in enumerate(ues, 2)]
    hosts.append(LabHost("es", "es", "10.2.0.1", "u", host_key="ssh-ed25519 A"))
    spec = Spec()
    settings = lte_settings.LteSettings(device_name="zmq" if zmq else "uhd", **(radio or {}))
    spec.lab = type("Lab", (), {"hosts": tuple(hosts), "radio": settings})()
    spec.host = lambda role: next(h for h in hosts if h.role == role)
    nodes = {h.name: type("N", (), {"spec": h, "name": h.name})() for h in hosts}
    return lte_link.LteLink(spec, nodes, "/tmp/testbed-abc123", Path("/nonexistent"), "abc123")


def _generated(link) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, text in link.configs().items():
        name = key.split(":", 1)[1]
        out["ue.conf" if name.startswith("ue-") else name] = text
    return out


# --------------------------------------------------------------------------- tests


def test_generated_files_use_only_srsran_names_and_all_required_ones():
    files = _generated(_link())
    for name in ("epc.conf", "enb.conf", "ue.conf"):
        names = ini_names(files[name])
        assert names <= EXAMPLE_NAMES[name], (name, names - EXAMPLE_NAMES[name])
        assert REQUIRED[name] <= names
    for name in ("rr.conf", "sib.conf", "rb.conf"):
        names = libconfig_names(files[name])
        assert names <= EXAMPLE_NAMES[name], (name, sorted(names - EXAMPLE_NAMES[name]))
        assert REQUIRED[name] <= names, REQUIRED[name] - names


def test_user_db_has_two_per_run_subscribers():
    link = _link()
    rows = [r.split(",") for r in _generated(link)["user_db.csv"].splitlines()
            if r and not r.startswith("#")]
    assert len(rows) == 2 and all(len(r) == len(USER_DB_FIELDS) for r in rows)
    md, ext = (dict(zip(USER_DB_FIELDS, r)) for r in rows)
    assert md["Name"] == "md" and md["Auth"] == "mil" and md["OP_Type"] == "opc"
    assert md["IMSI"].startswith("00101") and len(md["IMSI"]) == 15 and md["IMSI"] != ext["IMSI"]
    assert re.fullmatch(r"[0-9a-f]{32}", md["Key"]) and md["Key"] != ext["Key"]
    assert (md["IP_alloc"], ext["IP_alloc"]) == ("172.16.0.2", "172.16.0.3")
    assert md["QCI"] == "9"
    again = _link()  # per run: new credentials every time
    assert again.subscribers["md"].imsi != link.subscribers["md"].imsi
    imei = link.subscribers["md"].imei
    assert len(imei) == 15 and srsran_files._luhn_digit(imei[:-1]) == imei[-1]
    ue = configparser.ConfigParser(interpolation=None)
    ue.read_string(link.configs()["md:ue-md.conf"])
    assert ue["usim"]["imsi"] == md["IMSI"] and ue["usim"]["k"] == md["Key"]
    assert ue["gw"]["ip_devname"] == "tun_md" and ue["rf"]["device_name"] == "uhd"


def test_radio_devices_usrp_and_zeromq():
    enb = configparser.ConfigParser(interpolation=None)
    enb.read_string(_generated(_link())["enb.conf"])
    assert enb["rf"]["device_args"] == "type=b200" and enb["enb"]["enb_id"] == "0x19B"
    one = _link(zmq=True, ues=("md",))
    files = one.configs()
    enb.read_string(files["enb:enb.conf"])
    ue = configparser.ConfigParser(interpolation=None)
    ue.read_string(files["md:ue-md.conf"])
    assert enb["rf"]["device_name"] == ue["rf"]["device_name"] == "zmq"
    assert "tx_port=tcp://*:2000" in enb["rf"]["device_args"]
    assert "rx_port=tcp://10.2.0.2:2001" in enb["rf"]["device_args"]
    assert "tx_port=tcp://*:2001,rx_port=tcp://10.2.0.1:2000" in ue["rf"]["device_args"]
    with pytest.raises(lte_link.RealLabError, match="one eNB and one UE"):
        _link(zmq=True).configs()


def test_attach_line_and_metrics():
    line = "Network attach successful. IP: 172.16.0.2\n"
    assert lte_link.ATTACHED.search("RRC Connected\n" + line).group(1) == "172.16.0.2"
    assert lte_link.ENB_READY.search("\n==== eNodeB started ===\nType <t> to view trace\n")
    csv = "time;cc;pci;rsrp;snr;dl_brate;ul_brate\n1;0;1;-80.5;25.1;1000;2000\n2;0;1;-81;24;9;8\n"
    m = lte_link.parse_metrics_csv(csv)
    assert m["rsrp"] == -81.0 and m["ul_brate"] == 8.0


def test_bad_lte_values_are_scenario_errors():
    host = {"user": "u", "host_key": "ssh-ed25519 AAAA", "key_file": "~/.ssh/k"}
    hosts = [dict(host, name=n, role=n, address=f"10.3.0.{i}") for i, n in
             enumerate(("md", "es", "enb", "ext"), 2)]
    data = {"name": "l", "link": {"kind": "lte"}, "configurations": ["es-only"],
            "lab": {"hosts": hosts, "radio": {"mcc": 1, "n_prb": 30, "device_name": "usrp",
                                              "sgi_address": "172.16.0.0"}}}
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(data, "lte.yaml")
    msgs = {p.path: p.message for p in ei.value.problems}
    assert "quote it" in msgs["lab.radio.mcc"]
    assert "6, 15, 25, 50, 75, 100" in msgs["lab.radio.n_prb"]
    assert "uhd" in msgs["lab.radio.device_name"]
    assert "host address" in msgs["lab.radio.sgi_address"]
    data["lab"]["radio"] = {"dl_earfcn": 1850}
    data["lab"]["hosts"][0]["radio"] = {"device_args": "type=b200 serial=1", "gain": 3}
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(data, "lte.yaml")
    paths = {p.path for p in ei.value.problems}
    assert paths == {"lab.hosts[0].radio.device_args", "lab.hosts[0].radio.gain"}
    data["lab"]["hosts"][0]["radio"] = {"device_name": "uhd", "device_args": "type=b200"}
    s = parse_scenario(data, "lte.yaml")
    assert s.lab.radio.dl_earfcn == 1850 and s.host("md").radio["device_args"] == "type=b200"


SRC = os.environ.get("SRSRAN_4G_SRC")


@pytest.mark.skipif(not SRC, reason="SRSRAN_4G_SRC (a srsRAN 4G release_23_11 checkout) not set")
def test_names_are_in_the_example_files_themselves():
    src = Path(SRC)
    examples = {
        "epc.conf": src / "srsepc/epc.conf.example", "enb.conf": src / "srsenb/enb.conf.example",
        "ue.conf": src / "srsue/ue.conf.example", "rr.conf": src / "srsenb/rr.conf.example",
        "sib.conf": src / "srsenb/sib.conf.example", "rb.conf": src / "srsenb/rb.conf.example",
    }
    for name, path in examples.items():
        text = path.read_text()
        if name.endswith(("epc.conf", "enb.conf", "ue.conf")):
            sections = set(re.findall(r"^\[([a-z0-9_.]+)\]", text, re.M))
            for dotted in EXAMPLE_NAMES[name]:
                section, option = dotted.rsplit(".", 1)
                assert section in sections, (name, section)
                # options may be commented out in the example ("#device_name = auto")
                assert re.search(rf"^\s*#?\s*{re.escape(option)}\s*=", text, re.M), (name, dotted)
        else:  # the same dotted paths, read from the example by the same reader
            missing = EXAMPLE_NAMES[name] - libconfig_names(text)
            assert not missing, (name, sorted(missing))
    header = (src / "srsepc/user_db.csv.example").read_text()
    assert ",".join(USER_DB_FIELDS) in header
