"""Cells over loopback: the ES's queueing delay on the wire and in records, camera-paced MDs
that drop or queue frames arriving while busy, and deadlines. Real TailServer and heads on
127.0.0.1, real models (mnasnet0_5), replayed device-profile times."""

from __future__ import annotations

import json
import threading

import pytest

from testbed import wire
from testbed.devices import load_profile
from testbed.head import DROPPED_BUSY, HeadSettings, StepContext, run_head
from testbed.images import load_images
from testbed.profile import configurations
from testbed.records import read_records
from testbed.tail import TailServer, TailSettings

MODEL = "mnasnet0_5"
SEED = 3
PROFILE = {
    "kind": "testbed-profile", "schema": 2, "source": "test: a slow MD, a slow ES",
    "models": {MODEL: {"configs": {
        "es-only": {"md_s": 0.01, "md_dist": {"distribution": "fixed", "mean_s": 0.01},
                    "es_s": 0.2, "es_dist": {"distribution": "fixed", "mean_s": 0.2}},
        "md-only": {"md_s": 0.15, "md_dist": {"distribution": "fixed", "mean_s": 0.15}},
    }}},
}


@pytest.fixture(scope="module")
def frames():
    return load_images("builtin")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("profiles") / "slow.json"
    path.write_text(json.dumps(PROFILE))
    return load_profile(str(path))


def _config(name):
    (config,) = [c for c in configurations(MODEL) if c.name == name]
    return config


# ------------------------------------------------------------------ wire


def test_result_with_queueing_delay_round_trips():
    msg = wire.Result(7, 1_500_000, 42, 0, es_queue_ns=250_000)
    data = wire.encode(msg)
    assert len(data) == wire.wire_size(msg) == wire.HEADER_SIZE + 26
    assert wire.decode(data[:8], data[8:]) == msg


def test_result_of_an_older_tail_has_no_queueing_delay():
    old = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.MsgType.RESULT, 18) + \
        wire._RESULT.pack(7, 1_500_000, 42, 0)
    assert wire.decode(old[:8], old[8:]) == wire.Result(7, 1_500_000, 42, 0, es_queue_ns=0)


def test_result_of_another_length_names_the_layout():
    bad = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.MsgType.RESULT, 22) + bytes(22)
    with pytest.raises(wire.WireError) as err:
        wire.decode(bad[:8], bad[8:])
    assert "es_queue_ns u64" in str(err.value) and err.value.code == wire.ErrorCode.BAD_BODY


# ------------------------------------------------------------------ ES queueing, two MDs


def _two_mds(profile, frames, tmp_path, workers, n=4):
    """Two MDs streaming back to back at once to a tail with ``workers`` model workers."""
    config = _config("es-only")
    with TailServer(TailSettings(port=0, compute=profile, seed=SEED, threads=1,
                                 max_inferences=workers)) as tail:
        tail.start()
        barrier = threading.Barrier(2)
        errors = []

        def md(name):
            try:
                barrier.wait(30)
                run_head(HeadSettings(config=config, server=tail.address, frames=n, warmup=1,
                                      seed=SEED, threads=1, compute=profile,
                                      context=StepContext(md=name)),
                         tmp_path / f"{workers}-{name}.csv", frames=frames[:1])
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=md, args=(f"md{k}",)) for k in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    by_md = {name: [r for r in read_records(tmp_path / f"{workers}-{name}.csv") if not r.warmup]
             for name in ("md1", "md2")}
    for name, records in by_md.items():
        assert len(records) == n and all(r.status == "ok" and r.md == name for r in records)
        for r in records:
            parts = round(r.md_proc * 1e9) + round(r.comm * 1e9) + round(r.es_queue * 1e9) \
                + round(r.es_proc * 1e9)
            assert abs(parts - round(r.total * 1e9)) <= 3  # rounding of four floats only
            assert r.es_proc >= 0.2  # the profile's ES time, on the worker
    return by_md


def test_one_worker_queues_one_mds_frame_behind_the_others(profile, frames, tmp_path):
    """k=1, 0.2 s a frame, two MDs sending back to back: each frame finds the other MD's frame
    on the one worker and waits for it; with k=2 nothing waits. Parts add up exactly."""
    one = _two_mds(profile, frames, tmp_path, workers=1)
    for records in one.values():
        assert sorted(r.es_queue for r in records)[len(records) // 2] > 0.1
        assert all(r.total >= r.es_queue + 0.2 for r in records)
    two = _two_mds(profile, frames, tmp_path, workers=2)
    assert max(r.es_queue for records in two.values() for r in records) < 0.05


# ------------------------------------------------------------------ busy MD: drop or queue


@pytest.mark.parametrize("policy", ["drop", "queue"])
def test_an_overloaded_md_drops_or_queues(policy, profile, frames, tmp_path):
    """MD time 150 ms per frame, a camera at 10 fps (100 ms): the MD cannot keep up."""
    path = tmp_path / f"{policy}.csv"
    run_head(HeadSettings(config=_config("md-only"), frames=8, warmup=0, seed=SEED, threads=1,
                          compute=profile, capture_rate_hz=10.0, busy_policy=policy,
                          deadline_s=0.2, context=StepContext(md="md1")), path, frames=frames)
    records = list(read_records(path))
    assert [r.frame_id for r in records] == list(range(8))
    done = [r for r in records if r.status == "ok"]
    dropped = [r for r in records if r.status == DROPPED_BUSY]
    assert len(done) + len(dropped) == 8
    if policy == "drop":
        assert dropped and len(done) <= 5  # 0.8 s of frames, 0.15 s each
        assert all(not r.deadline_met and r.total is None for r in dropped)
        assert all(r.md_wait is not None and r.md_wait < 0.05 for r in done)
        assert all(r.deadline_met for r in done)  # 150 ms < 200 ms
    else:
        assert not dropped
        waits = [r.md_wait for r in done]
        assert waits[-1] > waits[1] + 0.2  # the backlog grows by ~50 ms a frame
        assert done[0].deadline_met and not done[-1].deadline_met
        for r in done:
            assert r.deadline_met == (r.md_wait + r.total <= 0.2)


def test_busy_policy_and_deadline_are_checked():
    with pytest.raises(ValueError, match="busy_policy: expected one of drop, queue"):
        HeadSettings(config=_config("md-only"), busy_policy="skip")
    with pytest.raises(ValueError, match="deadline_s: expected a positive number"):
        HeadSettings(config=_config("md-only"), deadline_s=0)


# ------------------------------------------------------------------ scenario keys


def _scenario(**top):
    from testbed.scenario import parse_scenario

    data = {"name": "cell", "lab": "emulated", "link": {"kind": "wifi", "preset": "wifi-80211g"},
            "configurations": ["es-only"], "model": MODEL, **top}
    return parse_scenario(data, source="cell.yaml")


def _problems(**top):
    from testbed.scenario import ScenarioError

    with pytest.raises(ScenarioError) as err:
        _scenario(**top)
    return str(err.value)


def test_a_cell_expands_to_md_hosts_and_steps_per_number_of_mds():
    from testbed.orchestrator import plan_steps
    from testbed.scenario import parse_scenario, scenario_to_dict

    s = _scenario(cell={"mds": 4, "busy_policy": "drop", "deadline_ms": 200},
                  es={"workers": 1}, capture_rate_hz=15, sweep={"mds": [1, 4]})
    assert [h.name for h in s.by_role("md")] == ["md1", "md2", "md3", "md4"]
    assert [(st.id, st.mds) for st in plan_steps(s)] == [("L0-m1-r0-es-only", 1),
                                                         ("L0-m4-r0-es-only", 4)]
    assert parse_scenario(scenario_to_dict(s)) == s
    assert [st.id for st in plan_steps(_scenario())] == ["L0-r0-es-only"]  # ids as before


@pytest.mark.parametrize("top, expected", [
    ({"capture_rate_hz": 0}, "cell.yaml: capture_rate_hz: expected a number > 0, got 0"),
    ({"cell": {"deadline_ms": -5}}, "cell.yaml: cell.deadline_ms: expected a number > 0, got -5"),
    ({"cell": {"busy_policy": "skip"}}, "cell.yaml: cell.busy_policy: expected one of"),
    ({"cell": {"mds": 300}}, "cell.yaml: cell.mds: expected at most 254 MDs: the emulated lab's "
                             "address plan has 255 station addresses and 1 go to ext hosts, got "
                             "more MDs than addresses (300)"),
    ({"cell": {"mds": 2}, "sweep": {"mds": [1, 4]}},
     "cell.yaml: sweep.mds[1]: expected at most cell.mds (2) MDs, got 4"),
    ({"sweep": {"mds": [2, 2]}}, "cell.yaml: sweep.mds: expected distinct numbers of MDs"),
    ({"es": {"workers": 0}}, "cell.yaml: es.workers: expected an integer >= 1, got 0"),
])
def test_cell_keys_are_checked(top, expected):
    if "sweep" not in top:
        top = {**top, "hosts": [{"name": "md", "role": "md"}, {"name": "es", "role": "es"},
                                {"name": "ap", "role": "ap"}, {"name": "ext", "role": "ext"}]}
    assert expected in _problems(**top)
