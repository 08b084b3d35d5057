"""Scenario model and loader: shipped files, every problem reported, round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from testbed import presets
from testbed.configs import TABLE5_NAMES
from testbed.scenario import (
    Host,
    ScenarioError,
    load_scenario,
    parse_scenario,
    scenario_to_dict,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.yaml"))


def minimal(**changes):
    """A small valid scenario as data; ``changes`` replace top-level keys (None deletes)."""
    data = {
        "name": "t",
        "link": {"kind": "wifi"},
        "hosts": [
            {"name": "md", "role": "md", "cpu": 0.5},
            {"name": "es", "role": "es"},
            {"name": "ap", "role": "ap"},
            {"name": "ext", "role": "ext"},
        ],
        "sweep": {"loads_mbit": [0, 5]},
        "configurations": ["md-only", "mimic-bottleneck"],
        "frames": 10,
        "warmup": 2,
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def problems_of(data, cores=2):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, "s.yaml", cores=cores)
    return info.value.problems


def paths(data, cores=2):
    return [p.path for p in problems_of(data, cores)]


# --------------------------------------------------------------------------- shipped files


def test_the_expected_scenarios_ship():
    names = {p.name for p in SHIPPED}
    assert {
        "quickstart.yaml",
        "wifi-load-sweep.yaml",
        "lte-load-sweep.yaml",
        "lab-wifi.yaml",
        "lab-lte.yaml",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_scenario_loads_and_round_trips(path):
    s = load_scenario(path, cores=2)
    assert s.name == path.stem
    assert s.source == str(path)
    d = scenario_to_dict(s)
    again = parse_scenario(json.loads(json.dumps(d)), "manifest", cores=2)
    assert again == s
    assert scenario_to_dict(again) == d
    for role in ("md", "es"):  # a cell has several MDs
        assert s.by_role(role) and all(h.role == role for h in s.by_role(role))
    assert s.host("enb" if s.link.kind == "lte" else "ap")
    assert s.warmup < s.frames


def test_quickstart_is_lc_ec_sc_on_a_small_model():
    s = load_scenario(SCENARIOS / "quickstart.yaml", cores=2)
    assert s.model == "densenet169"
    assert [(c.name, c.mode) for c in s.configurations] == [
        ("md-only", "LC"),
        ("es-only", "EC"),
        ("mimic-bottleneck", "SC"),
    ]
    sc = s.configuration("mimic-bottleneck")
    assert (sc.kind, sc.split, sc.n_ch, sc.quantize) == ("student", "bottleneck", 12, True)
    assert s.sweep.loads_mbit == (0.0, 10.0)
    assert (s.frames, s.warmup) == (30, 3)
    assert s.link.preset == "wifi-80211g" and s.emulated
    md = s.host("md")
    assert isinstance(md, Host) and md.cpu == 0.5 and md.torch_threads == 1


def test_sweeps_follow_the_paper():
    wifi = load_scenario(SCENARIOS / "wifi-load-sweep.yaml", cores=2)
    assert wifi.sweep.loads_mbit == (0, 5, 10, 15, 20)
    assert tuple(c.name for c in wifi.configurations) == TABLE5_NAMES
    assert wifi.model == "densenet201" and (wifi.frames, wifi.warmup) == (100, 5)
    assert wifi.configuration("org-split2").split == "transition1"
    lte = load_scenario(SCENARIOS / "lte-load-sweep.yaml", cores=2)
    assert lte.link.preset == "lte-srsran" and lte.link.shape.fair_per_station
    assert max(lte.sweep.loads_mbit) == lte.link.capacity_mbit == 3.0
    assert not lte.warnings


def test_lab_examples_are_real_inventories():
    for name in ("lab-wifi.yaml", "lab-lte.yaml"):
        s = load_scenario(SCENARIOS / name, cores=2)
        assert s.lab.kind == "real" and not s.hosts
        for h in s.lab.hosts:
            assert h.known_hosts or h.host_key
        assert s.host("md").interfaces


# --------------------------------------------------------------------------- problems


MALFORMED = """\
name: broken
link:
  kind: wifi
  rate_mbit: -3
  tcp: {slow_start_after_idle: 1}
hosts:
  - {name: md, role: md, cpu: 0.5}
  - {name: es, role: es, address: 10.0.0.1}
  - {name: md, role: ext}
sweep:
  loads_mbit: [0, 5, true, 10]
  direction: sideways
configurations:
  - md-only
  - {name: bad-split, mode: SC, model: densenet201, split: transition9}
  - {name: md-only, mode: LC}
frame: 10
frames: 10
warmup: 10
"""


def test_malformed_scenario_reports_every_problem(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(MALFORMED)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, cores=2)
    problems = info.value.problems
    assert sorted(p.path for p in problems) == sorted(
        [
            "frame",
            "link.rate_mbit",
            "link.tcp.slow_start_after_idle",
            "sweep.loads_mbit[2]",
            "sweep.direction",
            "hosts[1].address",
            "hosts[2].name",
            "hosts",  # no ap
            "configurations[1].split",
            "configurations[2].name",
            "warmup",
        ]
    )
    lines = str(info.value).splitlines()
    assert len(lines) == len(problems)
    assert all(line.startswith(f"{path}: ") for line in lines)
    by_path = {p.path: p.message for p in problems}
    assert by_path["frame"] == "unknown key 'frame' (did you mean 'frames'?)"
    assert by_path["link.rate_mbit"] == "expected a number > 0, got -3"
    assert by_path["link.tcp.slow_start_after_idle"] == "expected true or false, got an integer (1)"
    assert by_path["sweep.loads_mbit[2]"] == "expected a number, got a boolean (true)"
    assert by_path["sweep.direction"] == "expected one of uplink, downlink, got 'sideways'"
    assert "inside the lab subnet 198.18.0.0/15, got 10.0.0.1" in by_path["hosts[1].address"]
    assert by_path["hosts[2].name"] == "duplicate host name 'md' (also hosts[0])"
    assert by_path["hosts"] == "expected exactly one host with role 'ap' (wifi link), found 0"
    assert "unknown split point 'transition9'" in by_path["configurations[1].split"]
    assert "did you mean 'transition3'?" in by_path["configurations[1].split"]
    assert by_path["configurations[2].name"] == (
        "duplicate configuration name 'md-only' (also configurations[0])"
    )
    assert by_path["warmup"] == "expected fewer warm-up frames than frames (10), got 10"
    assert f"{path}: sweep.direction: expected one of uplink, downlink, got 'sideways'" in lines


def test_one_checker_words_the_scenario_and_its_radio_settings_alike():
    lab_hosts = [{"name": n, "role": n, "address": f"10.1.0.{i}", "user": "u",
                  "host_key": "ssh-ed25519 AAAA"} for i, n in enumerate(("md", "es", "enb"), 2)]
    data = minimal(name=5, hosts=None, sweep={"packet_bytes": 10},
                   link={"kind": "lte"}, lab={"hosts": lab_hosts, "radio": {"tac": -1, "mcc": 1}})
    by_path = {p.path: p.message for p in problems_of(data)}
    assert by_path["sweep.packet_bytes"] == "expected an integer from 64 to 65507, got 10"
    assert by_path["lab.radio.tac"] == "expected an integer from 0 to 65535, got -1"
    # quoting is suggested where the quoted digits would be valid (001, a name), not elsewhere
    assert by_path["lab.radio.mcc"].endswith("(YAML reads unquoted digits as a number: quote it)")
    assert by_path["name"].endswith("got an integer (5) (YAML reads unquoted digits as a number: "
                                    "quote it)")
    host = {p.path: p.message for p in problems_of(minimal(hosts=[{"name": 7, "role": "md"}]))}
    assert host["hosts[0].name"].endswith("got an integer (7)")


def test_unknown_keys_suggest_the_close_name():
    data = minimal(sweep={"load_mbit": [0], "setle_s": 1})
    data["hosts"][0]["torch_thread"] = 2
    data["lnik"] = {}
    messages = {p.path: p.message for p in problems_of(data)}
    assert messages["sweep.load_mbit"] == "unknown key 'load_mbit' (did you mean 'loads_mbit'?)"
    assert messages["sweep.setle_s"] == "unknown key 'setle_s' (did you mean 'settle_s'?)"
    assert "did you mean 'torch_threads'?" in messages["hosts[0].torch_thread"]
    assert "did you mean 'link'?" in messages["lnik"]
    far = {p.path: p.message for p in problems_of(minimal(colour="red"))}
    assert far["colour"].startswith("unknown key 'colour'; expected one of name, description")


@pytest.mark.parametrize(
    "change, path",
    [
        ({"frames": True}, "frames"),
        ({"sweep": {"loads_mbit": [0, False]}}, "sweep.loads_mbit[1]"),
        ({"link": {"kind": "wifi", "delay_ms": True}}, "link.delay_ms"),
        ({"link": {"kind": "wifi", "queue_packets": True}}, "link.queue_packets"),
        ({"capture_rate_hz": True}, "capture_rate_hz"),
        ({"seed": False}, "seed"),
    ],
)
def test_booleans_are_not_numbers(change, path):
    problems = problems_of(minimal(**change))
    assert [p.path for p in problems] == [path]
    assert "got a boolean" in problems[0].message


def test_yaml_syntax_error_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nlink:\n  kind: wifi\n  rate_mbit: [1, 2\nframes: 3\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (problem,) = info.value.problems
    assert problem.path.startswith("line 5, column")
    assert "YAML syntax error" in problem.message
    assert str(info.value).startswith(f"{path}: line 5, column")


def test_duplicate_yaml_keys_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    text = yaml.safe_dump(minimal(), sort_keys=False) + "frames: 20\n"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, cores=2)
    (problem,) = info.value.problems
    assert problem.path == "frames" and "given twice" in problem.message


def test_not_a_mapping_and_missing_keys():
    (p,) = problems_of(None)
    assert p.path == "" and "expected a mapping" in p.message
    assert sorted(paths({"name": "x"})) == ["configurations", "link"]


def test_configuration_problems_carry_the_key_path():
    data = minimal(
        configurations=[
            {"name": "a", "mode": "XX"},
            {"name": "b", "mode": "SC", "model": "resnet52", "split": 2},
            {"name": "c", "mode": "LC", "split": "transition1"},
            {"name": "d", "mode": "SC", "kind": "student", "model": "mobilenet_v2", "split": 1},
            {"name": "e", "mode": "SC", "split": "pool0", "jpeg_quality": 300, "colour": 1},
            "mimic_bottleneck",
        ]
    )
    messages = {p.path: p.message for p in problems_of(data)}
    assert set(messages) == {
        "configurations[0].mode",
        "configurations[1].model",
        "configurations[2].split",
        "configurations[3].kind",
        "configurations[4].jpeg_quality",
        "configurations[4].colour",
        "configurations[5]",
    }
    assert "did you mean 'resnet152'?" in messages["configurations[1].model"]
    assert "did you mean 'mimic-bottleneck'?" in messages["configurations[5]"]


def test_table5_configuration_with_a_model_without_student():
    data = minimal(model="mobilenet_v2", configurations=["md-only", "mimic-bottleneck"])
    (p,) = problems_of(data)
    assert p.path == "configurations[1]"
    assert "mimic-bottleneck with model mobilenet_v2" in p.message


def test_configuration_mapping_defaults_to_scenario_model_and_resolves_split():
    s = parse_scenario(
        minimal(model="resnet152", configurations=[{"name": "s", "mode": "SC", "split": 2}]),
        cores=2,
    )
    (c,) = s.configurations
    assert (c.model, c.split) == ("resnet152", "layer1")


def test_hosts_roles_addresses_and_cpu():
    data = minimal(
        link={"kind": "lte"},
        hosts=[
            {"name": "md", "role": "md", "cpu": 3},
            {"name": "es", "role": "es", "address": "198.18.0.7"},
            {"name": "es2", "role": "es", "address": "198.18.0.7"},
            {"name": "ap", "role": "ap"},
            {"name": "u", "role": "ue"},
            {"name": "Bad Name", "role": "phone"},
        ],
    )
    messages = {}
    for p in problems_of(data, cores=2):
        messages.setdefault(p.path, []).append(p.message)
    assert "at most the 2 cores" in messages["hosts[0].cpu"][0]
    assert "duplicate address 198.18.0.7" in messages["hosts[2].address"][0]
    assert "role 'ap' does not belong on a lte link (use 'enb')" in messages["hosts[3].role"]
    assert "only for a real LTE lab" in messages["hosts[4].role"][0]
    assert set(messages) >= {"hosts[5].name", "hosts[5].role"}
    assert any("role 'es'" in m and "found 2" in m for m in messages["hosts"])
    assert any("role 'enb'" in m and "found 0" in m for m in messages["hosts"])
    assert any("role 'ext'" in m for m in messages["hosts"])


def test_emulated_host_names_fit_interface_names():
    hosts = minimal()["hosts"]
    hosts[3] = {"name": "extern", "role": "ext"}  # 6 characters: tb<runid>-s<name> > 15
    (p,) = problems_of(minimal(hosts=hosts))
    assert p.path == "hosts[3].name" and "1-5 lowercase letters" in p.message
    hosts[3] = {"name": "ext2", "role": "ext"}
    assert parse_scenario(minimal(hosts=hosts), cores=2).host("ext").name == "ext2"


def test_link_spec_feeds_the_lab_shaper():
    from testbed.lab.plan import LinkShape

    for preset in presets.PRESETS.values():
        spec = presets.resolve_link({"kind": preset.kind})
        assert isinstance(spec.shape, LinkShape) and spec.shape == preset.shape
        assert spec.shape.burst_bytes is None  # the shaper's own default
        assert set(spec.to_dict()) == {"kind", "preset", "tcp", *presets.SHAPING_FIELDS}


def test_ext_host_needed_only_with_load():
    hosts = minimal()["hosts"][:3]
    assert paths(minimal(hosts=hosts)) == ["hosts"]
    s = parse_scenario(minimal(hosts=hosts, sweep={"loads_mbit": [0]}), cores=2)
    assert not s.by_role("ext")


def test_torch_threads_default_from_cpu_share():
    s = parse_scenario(
        minimal(
            hosts=[
                {"name": "md", "role": "md", "cpu": 0.5},
                {"name": "es", "role": "es", "cpu": 1.5},
                {"name": "ap", "role": "ap"},
                {"name": "ext", "role": "ext", "torch_threads": 3},
            ]
        ),
        cores=2,
    )
    assert [h.torch_threads for h in s.hosts] == [1, 1, 2, 3]


def test_ap_backend_namespace_vm_or_auto():
    s = parse_scenario(minimal(), cores=2)
    assert s.host("ap").backend == "auto" and s.host("md").backend == "namespace"  # AP: auto
    hosts = minimal()["hosts"]
    hosts[2] = {"name": "ap", "role": "ap", "backend": "vm"}
    s = parse_scenario(minimal(hosts=hosts), cores=2)
    assert s.host("ap").backend == "vm"
    assert parse_scenario(scenario_to_dict(s), cores=2) == s  # round trip keeps it
    lte = [{"name": "md", "role": "md"}, {"name": "es", "role": "es"},
           {"name": "enb", "role": "enb", "backend": "auto"}, {"name": "ext", "role": "ext"}]
    assert parse_scenario(minimal(link={"kind": "lte"}, hosts=lte), cores=2).host("enb").backend == "auto"
    hosts[2] = {"name": "ap", "role": "ap", "backend": "vn"}
    hosts[0] = {"name": "md", "role": "md", "backend": "vm"}
    messages = {p.path: p.message for p in problems_of(minimal(hosts=hosts))}
    assert messages["hosts[2].backend"] == "expected one of namespace, vm, ns3, auto, got 'vn'"
    assert "only the ap/enb host has a backend" in messages["hosts[0].backend"]


def test_load_above_capacity_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="testbed.scenario"):
        s = parse_scenario(minimal(sweep={"loads_mbit": [0, 20, 30]}), "w.yaml", cores=2)
    assert [w.path for w in s.warnings] == ["sweep.loads_mbit[2]"]
    assert s.warnings[0].severity == "warning"
    assert "above the link capacity (24 Mbit/s" in s.warnings[0].message
    assert "w.yaml: sweep.loads_mbit[2]" in caplog.text


def test_link_overrides_and_preset_kind():
    s = parse_scenario(
        minimal(link={"kind": "wifi", "rate_mbit": 12, "queue_packets": 50, "delay_ms": 1.5,
                      "tcp": {"congestion_control": "reno"}}),
        cores=2,
    )
    assert (s.link.shape.rate_mbit, s.link.shape.queue_packets, s.link.shape.delay_ms) == (12.0, 50, 1.5)
    assert s.link.overrides == ("rate_mbit", "queue_packets")  # 1.5 ms is the preset's own value
    assert s.link.tcp.congestion_control == "reno" and s.link.tcp.slow_start_after_idle
    assert paths(minimal(link={"kind": "wifi", "preset": "lte-srsran"})) == ["link.preset"]
    assert paths(minimal(link={"kind": "wlan"})) == ["link.kind"]


def test_real_lab_inventory_checks():
    host = {"name": "md", "role": "md", "address": "pi.lab", "user": "pi", "known_hosts": "kh"}
    inventory = [
        host,
        {**host, "name": "es", "role": "es", "port": 70000},
        {"name": "ap", "role": "ap", "address": "ap.lab", "user": "root"},
        {**host, "name": "ext", "role": "ext", "known_hosts": None, "host_key": "not a key",
         "interfaces": {"wlan": "a/b"}},
    ]
    data = minimal(lab={"hosts": inventory}, hosts=None)
    assert sorted(paths(data)) == [
        "lab.hosts[1].port",
        "lab.hosts[2]",
        "lab.hosts[3].host_key",
        "lab.hosts[3].interfaces.wlan",
    ]
    messages = {p.path: p.message for p in problems_of(data)}
    assert "must be pinned" in messages["lab.hosts[2]"]
    # only an md, and an emulated hosts section: es, ap and ext missing, hosts not allowed
    assert sorted(paths(minimal(lab={"hosts": [host]}))) == ["hosts"] + ["lab.hosts"] * 3


def test_warmup_zero_and_capture_rate():
    s = parse_scenario(minimal(frames=1, warmup=0, capture_rate_hz=2.5), cores=2)
    assert (s.frames, s.warmup, s.capture_rate_hz) == (1, 0, 2.5)
    assert parse_scenario(minimal(frames=3, warmup=None), cores=2).warmup == 2


def test_round_trip_of_a_built_scenario_is_json():
    s = parse_scenario(
        minimal(limits={"max_message_bytes": 1 << 20, "frame_timeout_s": 7.5}, description="d",
                images="/data/img", seed=7),
        cores=2,
    )
    assert (s.limits.max_message_bytes, s.limits.frame_timeout_s) == (1 << 20, 7.5)
    d = scenario_to_dict(s)
    assert json.loads(json.dumps(d)) == d
    assert d["link"]["rate_mbit"] == presets.WIFI_80211G.shape.rate_mbit
    assert parse_scenario(d, cores=2) == s


@pytest.mark.parametrize("limits, says", [
    ({"frame_timeout_s": 0}, "limits.frame_timeout_s"),
    ({"frame_timeout_s": "soon"}, "limits.frame_timeout_s"),
    ({"max_message_bytes": 0}, "limits.max_message_bytes"),
    ({"frame_timeout": 5}, "frame_timeout"),
])
def test_bad_limits_name_the_key(limits, says):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(minimal(limits=limits), cores=2)
    assert says in str(err.value)


def test_presets_state_their_sources():
    for preset in presets.PRESETS.values():
        assert preset.source and preset.why and "\n" not in preset.why
        assert presets.DEFAULT_PRESET[preset.kind] == preset.name
    assert not presets.WIFI_80211G.shape.fair_per_station
    assert presets.LTE_SRSRAN.shape.fair_per_station and presets.LTE_SRSRAN.shape.rate_mbit == 3.0
    link = presets.resolve_link({"kind": "lte", "delay_ms": 20})
    assert link.shape.delay_ms == 20.0 and link.overrides == ("delay_ms",)


def test_result_folders_from_before_the_backend_key_resume_as_namespace(tmp_path):
    from testbed.orchestrator import scenario_of

    s = parse_scenario(minimal(), cores=2)
    raw = scenario_to_dict(s)
    for host in raw["hosts"]:
        del host["backend"]  # as written before the key existed
        del host["hwsim"]
    (tmp_path / "manifest.json").write_text(json.dumps({"scenario": raw}))
    assert scenario_of(tmp_path).host("ap").backend == "namespace"
    raw["hosts"][2]["backend"] = "vm"  # a recorded choice is kept
    (tmp_path / "manifest.json").write_text(json.dumps({"scenario": raw}))
    assert scenario_of(tmp_path).host("ap").backend == "vm"
