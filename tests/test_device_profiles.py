"""Device profiles: the shipped ones, their checks (file + key path), sampling, scenario keys."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from analysis import paper, paper_devices
from analysis.profiles import read_profile as analysis_read_profile
from testbed import devices
from testbed.devices import Distribution, ProfileError, load_profile
from testbed.records import FrameRecord, read_records
from testbed.replay import Pacer
from testbed.scenario import ScenarioError, load_scenario, parse_scenario, scenario_to_dict

SHIPPED = {"paper-wifi-md", "paper-wifi-es", "rpi3b+", "jetson-tx2", "desktop-rtx2080ti"}


def test_every_shipped_profile_loads_and_names_its_source():
    assert SHIPPED <= set(devices.shipped_names())
    for name in SHIPPED:
        profile = load_profile(name)
        assert profile.source and profile.parts
        assert analysis_read_profile(devices.profile_path(name)).full_s or name == "paper-wifi-es"


def test_shipped_files_are_what_the_generator_writes():
    shares = json.loads((devices.DATA_DIR / "measured" / "project-host-1thread.json").read_text())
    for name, data in paper_devices.shipped(shares).items():
        assert json.loads((devices.DATA_DIR / f"{name}.json").read_text()) == data, name


def test_paper_wifi_profiles_are_table5():
    md, es = load_profile("paper-wifi-md"), load_profile("paper-wifi-es")
    for name, row in paper.TABLE5.items():
        for profile, side in ((md, "md"), (es, "es")):
            if row[f"{side}_proc"] is None:
                continue
            part = profile.part("densenet201", name, side)
            assert (part.kind, part.mean_s, part.std_s) == ("normal>0", *row[f"{side}_proc"])
    assert md.part("densenet201", "es-only", "md").kind == "fixed"
    with pytest.raises(ProfileError, match="no ES time of densenet201 md-only"):
        es.part("densenet201", "md-only", "es")


def test_table1_platforms_keep_table1_and_scale_the_rest():
    rpi = load_profile("rpi3b+")
    shares = load_profile(str(devices.DATA_DIR / "measured" / "project-host-1thread.json"))
    for model, full in paper.TABLE1_DEVICES["rpi3b+"]["full_s"].items():
        assert rpi.part(model, "md-only", "md").mean_s == pytest.approx(full)
        host_full = shares.part(model, "md-only", "md").mean_s
        head = shares.part(model, "org-split2", "md").mean_s
        assert rpi.part(model, "org-split2", "md").mean_s == pytest.approx(full * head / host_full,
                                                                          rel=1e-5)
    assert "derivation" in rpi.content and "Table 1" in rpi.source


def _write(tmp_path: Path, data) -> str:
    path = tmp_path / "lab-pi.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def _problems(ref: str) -> str:
    with pytest.raises(ProfileError) as info:
        load_profile(ref)
    return str(info.value)


def test_profile_problems_name_the_file_and_the_key_path(tmp_path):
    ref = _write(tmp_path, {
        "kind": "testbed-profile",
        "models": {
            "vgg16": {"configs": {}},
            "densenet201": {"configs": {
                "mimic-botleneck": {"md_s": 0.1,
                                    "md_dist": {"distribution": "fixed", "mean_s": 0.1}},
                "es-only": {"es_s": -0.2, "es_dist": {"distribution": "gauss", "mean_s": 0.1}},
                "org-split2": {"md_s": 0.1},
                "mimic-split2": {"mode": "SC"},
                "md-only": {"md_s": 0.1, "md_samples_s": [0.1, -1, "x"],
                            "es_s": 0.1, "es_dist": {"distribution": "fixed", "mean_s": 0.1}},
                "mimic-bottleneck": {"md_s": 0.1, "md_dist": {"distribution": "normal>0",
                                                              "mean_s": 0, "std_s": -1}},
            }},
        },
    })
    text = _problems(ref)
    expected = [
        ": source: required key is missing",
        ": models.vgg16: unknown key 'vgg16'",
        ": models.densenet201.configs.mimic-botleneck: unknown key 'mimic-botleneck' "
        "(did you mean 'mimic-bottleneck'?)",
        ": models.densenet201.configs.es-only.es_s: expected a number >= 0, got -0.2",
        ": models.densenet201.configs.es-only.es_dist.distribution: expected one of normal>0, "
        "lognormal, fixed, got 'gauss'",
        ": models.densenet201.configs.org-split2.md_s: a central time needs its distribution",
        ": models.densenet201.configs.mimic-split2: no times",
        ": models.densenet201.configs.md-only.md_samples_s[1]: expected a number >= 0, got -1",
        ": models.densenet201.configs.md-only.md_samples_s[2]: expected a number, got a string",
        ": models.densenet201.configs.md-only.es_dist: md-only runs on the MD alone",
        ": models.densenet201.configs.mimic-bottleneck.md_dist.mean_s: expected a number > 0, "
        "got 0",
        ": models.densenet201.configs.mimic-bottleneck.md_dist.std_s: expected a number >= 0",
    ]
    for line in expected:
        assert f"{ref}{line}" in text, (line, text)


def test_unreadable_and_unknown_profiles_say_so(tmp_path):
    assert "not a readable JSON profile" in _problems(_write(tmp_path, "{not json"))
    assert "no shipped device profile 'raspberry'" in _problems("raspberry")
    assert "paper-wifi-md" in _problems("raspberry")
    assert "no such profile file" in _problems(str(tmp_path / "absent.json"))


def test_quantiles_follow_each_distribution():
    grid = [(i + 0.5) / 20000 for i in range(20000)]  # evenly spread probabilities
    low = [Distribution("normal>0", 0.01, 0.02).quantile(u) for u in grid]
    assert min(low) > 0 and low == sorted(low)
    normal = [Distribution("normal>0", 0.52, 0.005).quantile(u) for u in grid]
    assert statistics.mean(normal) == pytest.approx(0.52, rel=1e-4)
    assert statistics.stdev(normal) == pytest.approx(0.005, rel=0.01)
    skewed = [Distribution("lognormal", 0.05, 0.02).quantile(u) for u in grid]
    assert statistics.mean(skewed) == pytest.approx(0.05, rel=0.01)
    assert statistics.stdev(skewed) == pytest.approx(0.02, rel=0.03)
    samples = Distribution("samples", 0.2, 0, (0.3, 0.1, 0.2))
    assert [samples.quantile(u) for u in (0.0, 0.34, 0.67, 0.999, 1.0)] == [0.1, 0.2, 0.3, 0.3, 0.3]
    assert Distribution("fixed", 0.04).quantile(0.9) == 0.04


def test_stratified_sampling_matches_the_profile_over_a_step():
    """100 measured frames after 5 warm-up ones (ids 5..104, as a step numbers them): the mean
    within 1% and the std within 15% of the profile's for every seed tried (independent draws
    miss the std by more than 15% for several of them)."""
    profile = load_profile("paper-wifi-md")
    for seed in range(40):
        pacer = Pacer.of(profile, "densenet201", "org-split2", "md", seed=seed)
        times = [pacer.sample_ns(i) * 1e-9 for i in range(5, 105)]
        assert statistics.mean(times) == pytest.approx(0.52, rel=0.01), seed
        assert statistics.stdev(times) == pytest.approx(0.005, rel=0.15), seed


def test_sampling_is_seeded_per_frame():
    profile = load_profile("paper-wifi-md")
    a = Pacer.of(profile, "densenet201", "mimic-bottleneck", "md", seed=7)
    b = Pacer.of(profile, "densenet201", "mimic-bottleneck", "md", seed=7)
    c = Pacer.of(profile, "densenet201", "mimic-bottleneck", "md", seed=8)
    assert [a.sample_ns(i) for i in range(20)] == [b.sample_ns(i) for i in range(20)]
    assert [a.sample_ns(i) for i in range(20)] != [c.sample_ns(i) for i in range(20)]
    assert len({a.sample_ns(i) for i in range(20)}) == 20


SCENARIO = """
name: devices
link: {kind: wifi}
hosts:
  - {name: md, role: md, compute: %s}
  - {name: es, role: es, compute: %s}
  - {name: ap, role: ap}
  - {name: ext, role: ext}
configurations: [md-only, es-only, mimic-bottleneck%s]
"""


def test_scenario_compute_keys(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO % ("paper-wifi-md", "paper-wifi-es", ""))
    s = load_scenario(path)
    assert [h.compute for h in s.hosts] == ["paper-wifi-md", "paper-wifi-es", "real", "real"]
    assert parse_scenario(scenario_to_dict(s)) == s
    assert devices.compute_argv(s.host("md")) == ["--compute", "paper-wifi-md"]
    assert devices.compute_argv(s.host("ap")) == []
    manifest = devices.compute_manifest(s.hosts)
    assert manifest["es"]["source"].startswith(paper.TABLE5_SOURCE)
    assert manifest["ap"] == {"model": "real"}
    # a relative path is read next to the scenario, kept absolute
    (tmp_path / "pi.json").write_text((devices.DATA_DIR / "rpi3b+.json").read_text())
    path.write_text(SCENARIO % ("pi.json", "real", ""))
    assert load_scenario(path).host("md").compute == str((tmp_path / "pi.json").resolve())


def test_scenario_compute_problems(tmp_path):
    path = tmp_path / "s.yaml"
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "testbed-profile", "source": "x",
                                                   "models": {"densenet201": {"configs": {
                                                       "es-only": {"es_s": 1}}}}}))
    path.write_text(SCENARIO % ("paper-wifi-es", "bad.json", ", {name: mine, mode: EC}"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert f"{path}: hosts[1].compute: device profile 'bad.json' cannot be used" in text
    assert (f"{tmp_path / 'bad.json'}: models.densenet201.configs.es-only.es_s: a central time "
            "needs its distribution") in text
    path.write_text(SCENARIO % ("paper-wifi-es", "paper-wifi-es", ", {name: mine, mode: EC}"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert (f"{path}: hosts[0].compute: paper-wifi-es has no MD time of configuration "
            "'md-only' (densenet201)") in text
    assert (f"{path}: hosts[1].compute: paper-wifi-es has no ES time of configuration "
            "'mine' (densenet201)") in text
    assert "configuration 'md-only' (densenet201)" not in text.split("hosts[1]", 1)[1]
    path.write_text(SCENARIO.replace("{name: ap, role: ap}",
                                     "{name: ap, role: ap, compute: rpi3b+}") % ("real", "real", ""))
    with pytest.raises(ScenarioError, match=r"hosts\[2\].compute: only the md and es hosts"):
        load_scenario(path)


def test_records_without_compute_columns_still_load(tmp_path):
    new = ("md_compute", "es_compute", "compute_overrun")
    old = [c for c in FrameRecord.columns() if c not in new]
    path = tmp_path / "frames.csv"
    row = {c: "" for c in old} | {"run_id": "r", "config": "md-only", "mode": "LC",
                                  "model": "densenet201", "frame_id": "0", "warmup": "False",
                                  "payload_bytes": "0", "wire_bytes": "0", "md_proc": "0.5",
                                  "total": "0.5", "status": "ok", "repetition": "0",
                                  "capture_ns": "1"}
    path.write_text(",".join(old) + "\n" + ",".join(row[c] for c in old) + "\n")
    (record,) = read_records(path)
    assert (record.md_compute, record.es_compute, record.compute_overrun) == ("real", "", "")


def _result_folder(tmp_path: Path, md_compute: str, es_compute: str) -> Path:
    """A loopback result folder whose processing times are known: each configuration's MD and
    ES times alternate mean ± 1 % around Table 5's."""
    from testbed.records import RecordWriter
    from testbed.resultdir import FRAMES, MANIFEST, write_json

    out = tmp_path / "run"
    out.mkdir()
    write_json(out / MANIFEST, {"kind": "loopback-demo", "run_id": "r", "status": {}})
    with RecordWriter(out / FRAMES) as writer:
        for name, row in paper.TABLE5.items():
            mode = paper_devices.MODES[name]
            for i in range(20):
                wiggle = 1.01 if i % 2 else 0.99
                md = (row["md_proc"] or (0.001, 0))[0] * wiggle
                es = None if mode == "LC" else row["es_proc"][0] * wiggle
                comm = None if mode == "LC" else 0.002
                writer.write(FrameRecord(
                    run_id="r", config=name, mode=mode, model="densenet201", split="", n_ch=None,
                    frame_id=i, image_id="x", warmup=i < 2, payload_bytes=1, wire_bytes=1,
                    md_proc=md, es_proc=es, comm=comm, total=md + (es or 0) + (comm or 0),
                    predicted=1, status="ok", md_compute=md_compute,
                    es_compute="" if mode == "LC" else es_compute,
                    compute_overrun="es" if i == 5 and mode != "LC" else ""))
    return out


def test_report_puts_the_papers_table5_beside_a_run_on_the_papers_devices(tmp_path):
    from analysis.compute import compute_note
    from analysis.devices_report import paper_table5
    from analysis.load import load_results
    from analysis.tables import component_stats, table5_caption

    results = load_results(_result_folder(tmp_path, "profile:paper-wifi-md",
                                          "profile:paper-wifi-es"))
    stats = component_stats(results)
    table = paper_table5(stats, results.frames)
    assert table is not None
    assert table.loc["org-split2", "MD processing: paper"] == "0.52 ± 0.005"
    assert table.loc["org-split2", "MD processing: ratio"] == "1.00"
    assert table.loc["md-only", "ES processing: this run"] == "-"
    assert table.loc["es-only", "ES processing: ratio"] == "1.00"
    note = compute_note(results.frames)
    assert "MD processing emulated from profile:paper-wifi-md" in note
    assert "4 measured frame(s) flagged compute_overrun" in note
    assert note in table5_caption(stats, results)


def test_real_runs_get_no_emulation_note_and_no_paper_table(tmp_path):
    from analysis.compute import compute_note
    from analysis.devices_report import paper_table5
    from analysis.load import load_results
    from analysis.tables import component_stats

    results = load_results(_result_folder(tmp_path, "real", "real"))
    assert compute_note(results.frames) == ""
    assert paper_table5(component_stats(results), results.frames) is None


def test_figures_and_conditions_say_processing_was_emulated(tmp_path):
    import json as _json

    from analysis.conditions import sections
    from analysis.figures import fig_percentiles, label_emulation
    from analysis.load import load_results

    folder = _result_folder(tmp_path, "profile:paper-wifi-md", "profile:paper-wifi-es")
    manifest = _json.loads((folder / "manifest.json").read_text())
    manifest["compute"] = devices.compute_manifest(_paper_hosts())
    (folder / "manifest.json").write_text(_json.dumps(manifest))
    results = load_results(folder)
    fig = fig_percentiles(results.frames)
    label_emulation(fig, results.frames)
    title = fig.legends[0].get_title().get_text()
    assert title.startswith("Processing emulated: MD profile:paper-wifi-md; "
                            "ES profile:paper-wifi-es\n")
    assert "hollow markers" in title  # the legend's own title is kept
    rows = dict(sections(results.manifests[results.labels[0]])[
        "Compute: real or replayed device profiles"])
    assert rows["md"].startswith("profile:paper-wifi-md (" + paper.PAPER)
    assert rows["ap"] == "real"


def _paper_hosts():
    return parse_scenario({"name": "x", "link": {"kind": "wifi"}, "configurations": ["es-only"],
                           "hosts": [{"name": "md", "role": "md", "compute": "paper-wifi-md"},
                                     {"name": "es", "role": "es", "compute": "paper-wifi-es"},
                                     {"name": "ap", "role": "ap"}, {"name": "ext", "role": "ext"}]
                           }).hosts


def test_a_testbed_profile_file_is_a_replayable_profile(tmp_path):
    from testbed.profile import profile_host, write_profile

    path = write_profile(profile_host(["mnasnet0_5"], n=3, warmup=1), tmp_path / "here.json")
    profile = load_profile(str(path))
    assert "measured by `testbed profile`" in profile.source
    for config, side in (("md-only", "md"), ("es-only", "md"), ("es-only", "es"),
                         ("org-split2", "md"), ("org-split2", "es")):
        part = profile.part("mnasnet0_5", config, side)
        assert part.kind == "samples" and len(part.samples_s) == 3 and part.mean_s > 0
    assert ("mnasnet0_5", "md-only", "es") not in profile.parts
