"""Replaying device profiles over loopback: a real TailServer and head on 127.0.0.1, real
models (mnasnet0_5, small), real bytes; only the time on the critical path is the profile's."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from testbed.devices import load_profile
from testbed.head import HeadError, HeadSettings, run_head
from testbed.images import load_images
from testbed.models.split import build_split
from testbed.payloads import es_input, es_predict, md_local, md_message
from testbed.profile import configurations
from testbed.records import read_records
from testbed.replay import MdReplay, Pacer
from testbed.tail import TailServer, TailSettings

MODEL = "mnasnet0_5"
SEED = 3
# well above what this machine needs for mnasnet0_5 (about 10 ms a part on one thread)
PROFILE = {
    "kind": "testbed-profile", "schema": 2, "source": "test: times well above real compute",
    "models": {MODEL: {"configs": {
        "md-only": {"md_s": 0.15, "md_dist": {"distribution": "normal>0", "mean_s": 0.15,
                                             "std_s": 0.01}},
        "es-only": {"md_s": 0.05, "md_dist": {"distribution": "fixed", "mean_s": 0.05},
                    "es_s": 0.1, "es_samples_s": [0.09, 0.1, 0.11, 0.12]},
        "org-split2": {"md_s": 0.12, "md_dist": {"distribution": "normal>0", "mean_s": 0.12,
                                                "std_s": 0.01},
                       "es_s": 0.08, "es_dist": {"distribution": "lognormal", "mean_s": 0.08,
                                                 "std_s": 0.01}},
    }}},
}
# ES times far below any real tail: its real work (first sight of each message) overruns them
FAST_ES = {**PROFILE, "models": {MODEL: {"configs": {
    "org-split2": {"es_s": 1e-5, "es_dist": {"distribution": "fixed", "mean_s": 1e-5}}}}}}


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


def _run(config, tail, compute, tmp_path, frames, n=10, warmup=2):
    path = tmp_path / f"{config.name}.csv"
    failed = run_head(HeadSettings(config=config, server=tail.address if tail else None, frames=n,
                                   warmup=warmup, seed=SEED, threads=1, compute=compute),
                      path, frames=frames)
    assert failed == 0
    return list(read_records(path))


@pytest.mark.parametrize("name", ["org-split2", "es-only", "md-only"])
def test_replayed_times_follow_the_profile_and_results_stay_real(name, profile, tmp_path, frames):
    config = _config(name)
    with TailServer(TailSettings(port=0, compute=profile, seed=SEED, threads=1)) as tail:
        tail.start()
        records = _run(config, tail if config.mode != "LC" else None, profile, tmp_path, frames)
    measured = [r for r in records if not r.warmup]
    assert len(measured) == 10
    sides = ("md",) if config.mode == "LC" else ("md", "es")
    for side in sides:
        pacer = Pacer.of(profile, MODEL, name, side, SEED)
        sampled = [pacer.sample_ns(r.frame_id) * 1e-9 for r in measured]
        got = [getattr(r, f"{side}_proc") for r in measured]
        assert all(g >= s for g, s in zip(got, sampled)), (side, got, sampled)
        # a few % (or 3 ms of wake-up latency on a loaded 2-core machine)
        assert statistics.mean(got) == pytest.approx(statistics.mean(sampled), rel=0.03,
                                                     abs=0.003), side
    label = f"profile:{profile.name}"
    assert {(r.md_compute, r.es_compute, r.compute_overrun) for r in measured} == {
        (label, "" if config.mode == "LC" else label, "")}
    if config.mode != "LC":  # an ES that replays is shown every image during warm-up
        assert sum(r.warmup for r in records) == len(frames)
    # the predictions are the real models' on the real bytes
    model = build_split(config, side="both", seed=SEED)
    for r in measured:
        image = frames[r.frame_id % len(frames)].image
        if config.mode == "LC":
            expected = md_local(model, image)
        else:
            msg = md_message(config, model, r.frame_id, image)
            expected = es_predict(model, es_input(config, model, msg, 1 << 24))
            assert r.payload_bytes == len(msg.payload)
        assert r.predicted == expected


def test_es_work_beyond_its_sample_is_flagged_not_hidden(tmp_path, frames):
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(FAST_ES))
    fast = load_profile(str(path))
    with TailServer(TailSettings(port=0, compute=fast, seed=SEED, threads=1)) as tail:
        tail.start()
        records = _run(_config("org-split2"), tail, None, tmp_path, frames, n=4, warmup=0)
    warm, measured = records[:len(frames)], records[len(frames):]
    # first sight of each message: the real tail ran now and outlasted 10 us
    assert [r.compute_overrun for r in warm] == ["es"] * len(frames)
    assert all(r.es_proc > 1e-5 for r in warm)
    # afterwards, from the cache: on time
    assert [r.compute_overrun for r in measured] == [""] * 4
    assert {(r.md_compute, r.es_compute) for r in records} == {("real", f"profile:{path}")}


def test_md_work_beyond_its_sample_is_flagged(frames, tmp_path):
    path = tmp_path / "fast-md.json"
    path.write_text(json.dumps({**PROFILE, "models": {MODEL: {"configs": {"md-only": {
        "md_s": 1e-5, "md_dist": {"distribution": "fixed", "mean_s": 1e-5}}}}}}))
    config = _config("md-only")
    md = MdReplay.of(load_profile(str(path)), config, build_split(config, side="md", seed=SEED),
                     SEED)
    capture = time.perf_counter_ns()
    _, work_ns = md.output(0, frames[0])  # not prepared: real work on the critical path
    assert md.release(0, capture, work_ns) is True
    capture = time.perf_counter_ns()
    _, work_ns = md.output(1, frames[0])  # cached
    assert work_ns is None and md.release(1, capture, work_ns) is False


def test_a_profile_without_the_configuration_is_refused(profile, tmp_path, frames):
    config = _config("org-split2")
    es_only = load_profile("paper-wifi-es")
    with TailServer(TailSettings(port=0, compute=es_only, seed=SEED, threads=1)) as tail:
        tail.start()
        with pytest.raises(HeadError, match="no ES time of mnasnet0_5 org-split2"):
            _run(config, tail, None, tmp_path, frames, n=1, warmup=0)
    with pytest.raises(HeadError, match="no MD time of mnasnet0_5 md-only"):
        _run(_config("md-only"), None, load_profile("paper-wifi-md"), tmp_path, frames, n=1,
             warmup=0)


def test_steps_on_one_prepared_head_compute_each_image_once(profile, tmp_path, frames,
                                                            monkeypatch):
    from testbed import replay
    from testbed.head import prepare_head, run_step

    calls = []
    real = replay.md_local
    monkeypatch.setattr(replay, "md_local", lambda *a: calls.append(1) or real(*a))
    settings = HeadSettings(config=_config("md-only"), frames=3, warmup=0, seed=SEED, threads=1,
                            compute=profile)
    prepared = prepare_head(settings, frames)
    for step in range(2):  # as the head agent runs them: the same prepared head
        assert run_step(prepared, settings, tmp_path / f"s{step}.csv") == 0
        assert len(calls) == 3, step  # the step's three images, computed in the first step only
        assert [r.status for r in read_records(tmp_path / f"s{step}.csv")] == ["ok"] * 3
