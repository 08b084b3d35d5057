"""The analytic model of Section V: closed-form crossing points, profiles, paper data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis import paper
from analysis.analytic import (Option, always_faster, analyse_pair, crossing, crossing_mbit, edge,
                               gain, local, split)
from analysis.load import load_results
from analysis.profiles import (DeviceProfile, Payloads, ProfileError, SplitShares, paper_devices,
                               paper_payloads, profile_from_dict, read_profile, result_payloads,
                               shares_from_profile, shares_from_table5)

SWEEP = Path(__file__).parent / "fixtures" / "analysis" / "sweep"

# A hand-made pair: MD runs the full model in 2 s, the ES in 0.1 s; the split head takes 10%
# of the MD's full time and the tail 50% of the ES's; JPEG 100 kB, split tensor 10 kB.
MD = DeviceProfile("md", "hand MD", {"m": 2.0, "small": 0.5}, "hand-made")
ES = DeviceProfile("es", "hand ES", {"m": 0.1}, "hand-made")
PAY = Payloads(jpeg_bytes=100_000, split_bytes=10_000, source="hand-made")
SHARES = SplitShares(head=0.1, tail=0.5, source="hand-made")


def test_options_follow_section_ii_definitions():
    lc, ec, sc = local(MD, "m"), edge(ES, "m", PAY), split(MD, ES, "m", PAY, SHARES)
    assert (lc.head_s, lc.payload_bytes, lc.tail_s) == (2.0, 0.0, 0.0)
    assert (ec.head_s, ec.payload_bytes, ec.tail_s) == (0.0, 100_000, 0.1)
    assert (sc.head_s, sc.payload_bytes, sc.tail_s) == pytest.approx((0.2, 10_000, 0.05))
    # T = head + payload*8/r + tail, r in Mbit/s
    assert ec.total_s(8.0) == pytest.approx(0.1 + 100_000 * 8 / 8e6)
    assert sc.total_s(np.array([1.0, 10.0])) == pytest.approx([0.25 + 0.08, 0.25 + 0.008])
    assert any("scaled" in n for n in sc.notes)


def test_crossing_points_match_closed_form():
    lc, ec, sc = local(MD, "m"), edge(ES, "m", PAY), split(MD, ES, "m", PAY, SHARES)
    mobile = local(MD, "small")
    # SC vs EC: 0.25 + 80000/r = 0.1 + 800000/r  ->  r = 720000 / 0.15 bit/s = 4.8 Mbit/s
    c = crossing(sc, ec)
    assert c.rate_mbit == pytest.approx(4.8)
    assert c.total_s == pytest.approx(sc.total_s(4.8)) == pytest.approx(ec.total_s(4.8))
    assert c.below == sc.label and c.above == ec.label  # the small payload wins on slow links
    # SC vs LC: 0.25 + 80000/r = 2.0  ->  r = 80000 / 1.75 bit/s
    assert crossing_mbit(sc, lc) == pytest.approx(80_000 / 1.75 / 1e6)
    assert crossing(sc, lc).above == sc.label
    # SC vs a 0.5 s local model: r = 80000 / 0.25 bit/s = 0.32 Mbit/s
    assert crossing_mbit(sc, mobile) == pytest.approx(0.32)
    # EC vs LC: 0.1 + 800000/r = 2.0  ->  r = 800000 / 1.9 bit/s
    assert crossing_mbit(ec, lc) == pytest.approx(800_000 / 1.9 / 1e6)
    # symmetric, and the gain is exactly 1 there
    assert crossing_mbit(ec, sc) == pytest.approx(4.8)
    assert gain(ec, sc, 4.8) == pytest.approx(1.0)
    assert gain(ec, sc, 1.0) > 1 > gain(ec, sc, 20.0)


def test_crossing_agrees_with_a_sign_change_on_a_fine_grid():
    sc, ec = split(MD, ES, "m", PAY, SHARES), edge(ES, "m", PAY)
    r = np.logspace(-2, 3, 200_001)
    diff = sc.total_s(r) - ec.total_s(r)
    i = np.flatnonzero(np.diff(np.sign(diff)))[0]
    assert r[i] <= crossing_mbit(sc, ec) <= r[i + 1]


def test_no_crossing_when_one_option_dominates():
    fast = Option("fast", "SC", 0.01, 1_000, 0.01)
    slow = Option("slow", "EC", 0.0, 50_000, 0.5)
    assert crossing(fast, slow) is None and always_faster(fast, slow) == "fast"
    same_payload = Option("a", "SC", 0.1, 1_000, 0.0)
    assert crossing_mbit(same_payload, Option("b", "SC", 0.2, 1_000, 0.0)) is None
    tie = Option("c", "SC", 0.1, 1_000, 0.0)
    assert always_faster(same_payload, tie) is None


def test_split_with_measured_times_is_not_scaled():
    sc = split(MD, ES, "m", PAY, head_s=0.3, tail_s=0.02)
    assert (sc.head_s, sc.tail_s) == (0.3, 0.02)
    assert not any("scaled" in n for n in sc.notes)
    with pytest.raises(ValueError):
        split(MD, ES, "m", PAY)


def test_paper_data_and_figure_2_crossings():
    devices = paper_devices()
    assert set(devices) == {"rpi3b+", "jetson-tx2", "desktop-rtx2080ti"}
    assert devices["rpi3b+"].full("densenet201") == 9.720
    assert devices["desktop-rtx2080ti"].full("mobilenet_v2") == 0.0049
    assert paper.TABLE1_ACCURACY_PCT["resnet152"] == 78.31
    assert "Table 1" in devices["jetson-tx2"].source
    pay = paper_payloads("inception_v3")
    assert (pay.jpeg_bytes, pay.split_bytes) == pytest.approx((100.1 * 1024, 16.77 * 1024))
    with pytest.raises(ProfileError, match="no full-model time"):
        devices["rpi3b+"].full("vgg16")
    # The paper (Section II-B): desktop ES vs local MobileNet v2 on a TX2 cross "at about 7 Mbps";
    # with a TX2 as ES, EC wins "unless the data rate ... is smaller than ~1 Mbps" (RPi MD)
    ec_desk = edge(devices["desktop-rtx2080ti"], "densenet201", paper_payloads("densenet201"))
    assert crossing_mbit(ec_desk, local(devices["jetson-tx2"], "mobilenet_v2")) == pytest.approx(7.25, rel=0.01)
    ec_tx2 = edge(devices["jetson-tx2"], "densenet201", paper_payloads("densenet201"))
    assert 0.5 < crossing_mbit(ec_tx2, local(devices["rpi3b+"], "mobilenet_v2")) < 1.0


def test_table5_shares_and_densenet201_crossings():
    s = shares_from_table5()
    assert (s.head, s.tail) == pytest.approx((0.062 / 1.520, 0.0225 / 0.034))
    d = paper_devices()
    p = analyse_pair(d["rpi3b+"], d["desktop-rtx2080ti"], "densenet201",
                     paper_payloads("densenet201"), s)
    head, tail = s.head * 9.720, s.tail * 0.028
    expected = 8 * (74.34 - 10.58) * 1024 / (head + tail - 0.028) / 1e6
    assert p.crossings()["SC vs EC"].rate_mbit == pytest.approx(expected)
    assert p.crossings()["SC vs local MobileNet v2"].rate_mbit == pytest.approx(
        8 * 10.58 * 1024 / (1.348 - head - tail) / 1e6)


PROFILE = {
    "kind": "testbed-profile", "schema": 1, "created": "now", "frames": 3,
    "device": {"key": "host-x", "name": "x (1 thread)", "threads": 1},
    "models": {"m": {"configs": {
        "md-only": {"mode": "LC", "md_s": 0.4, "es_s": None, "payload_bytes": 0, "wire_bytes": 0},
        "es-only": {"mode": "EC", "md_s": 0.002, "es_s": 0.5, "payload_bytes": 20_000, "wire_bytes": 20_050},
        "mimic-bottleneck": {"mode": "SC", "md_s": 0.02, "es_s": 0.25, "payload_bytes": 10_092,
                             "wire_bytes": 10_131},
    }}},
}


def test_measured_profile_gives_shares_and_payloads(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROFILE))
    prof = read_profile(path)
    assert prof.measured and prof.full("m") == 0.4
    s = shares_from_profile(prof, "m")
    assert (s.head, s.tail) == pytest.approx((0.05, 0.5))
    assert "measured" in s.source
    from analysis.profiles import profile_payloads

    assert profile_payloads(prof, "m").split_bytes == 10_131
    with pytest.raises(ProfileError, match="testbed profile --models other"):
        shares_from_profile(prof, "other")
    hand = profile_from_dict({"key": "lab-md", "name": "Lab MD", "full_s": {"m": 1.5}})
    assert hand.full("m") == 1.5 and not hand.measured
    with pytest.raises(ProfileError, match="no such profile"):
        read_profile(tmp_path / "missing.json")
    with pytest.raises(ProfileError, match="newer"):
        profile_from_dict(dict(PROFILE, schema=99))


def test_payloads_measured_in_a_run():
    frames = load_results(SWEEP).frames
    pay = result_payloads(frames)
    assert pay.jpeg_bytes == pytest.approx(frames.loc[frames["config"] == "es-only", "wire_bytes"].mean())
    assert pay.split_bytes == pytest.approx(frames.loc[frames["config"] == "mimic-bottleneck", "wire_bytes"].mean())
    with pytest.raises(ProfileError, match="no frames of configuration"):
        result_payloads(frames, sc_config="org-split2")
