"""Replaying a device profile at run time: real bytes and results, the profile's time.

A side that follows a profile (``testbed.devices``) does its real work once per distinct input
and keeps it (the MD: the message of each image, or LC's prediction, computed before the first
frame; the ES: the prediction of each distinct message, by content), so this machine's CPU stays
free for the network and the lab. On the critical path it only waits:

- the MD sends a frame once its sampled MD time has elapsed since capture;
- the ES replies once its sampled ES time has elapsed since the message was fully received.

If the real work had to run on the critical path (an input not seen before) and took longer than
the sample, the frame is sent or answered when the work is done, and flagged
(``compute_overrun``), never silently stretched.

Sampling is seeded and stratified. Frame ids are taken in blocks of ``STRATA`` (0-19, 20-39,
...); within a block each frame gets its own ``1/STRATA`` slice of probability (a permutation
seeded by ``seed|model|configuration|side|block``) and a uniform point inside it (seeded by the
same key and the frame id), and its time is the distribution's quantile there (Latin hypercube
sampling). Each frame's time still follows the profile, but every block covers the
distribution evenly, so a step's mean and spread match the profile's instead of wandering with
the luck of the draw: over 100 frames, independent draws of a normal miss its std by more than
10% in about one seed of seven and by up to 26%; stratified ones by at most 11% in 300 seeds.
A run is reproducible and every load step of a sweep sees the same processing times for the
same frame ids (differences between steps are the network's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable

from testbed import wire
from testbed.configs import Configuration
from testbed.devices import DeviceProfile, Distribution, compute_label
from testbed.images import Frame
from testbed.models.split import SplitModel
from testbed.payloads import md_local, md_message


STRATA = 20
"""Frames per block of stratified sampling (module docstring)."""


@dataclass(frozen=True)
class Pacer:
    """One side's sampled processing times for one configuration."""

    profile: DeviceProfile
    part: Distribution
    model: str
    config: str
    side: str
    seed: int = 0

    @classmethod
    def of(cls, profile: DeviceProfile, model: str, config: str, side: str, seed: int) -> "Pacer":
        """``devices.ProfileError`` if the profile has no such part."""
        return cls(profile, profile.part(model, config, side), model, config, side, seed)

    @property
    def label(self) -> str:
        return compute_label(self.profile)

    def sample_ns(self, frame_id: int) -> int:
        key = f"{self.seed}|{self.model}|{self.config}|{self.side}"
        block, slot = divmod(frame_id, STRATA)
        order = list(range(STRATA))
        random.Random(f"{key}|{block}").shuffle(order)
        u = (order[slot] + random.Random(f"{key}|{block}|{frame_id}").random()) / STRATA
        return max(0, round(self.part.quantile(u) * 1e9))


def wait_until(deadline_ns: int) -> None:
    """Sleep until ``perf_counter_ns() >= deadline_ns``."""
    while (remaining := deadline_ns - time.perf_counter_ns()) > 0:
        time.sleep(remaining * 1e-9)


class WorkCache:
    """Real results by key, each computed once (thread-safe). At most ``limit`` are kept
    (a peer sending ever-new inputs cannot grow it further; those are computed every time)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._done: dict[Hashable, object] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], object]) -> tuple[object, int | None]:
        """``(value, ns the work took on this call, or None if it was cached)``."""
        with self._lock:
            if key in self._done:
                return self._done[key], None
        started = time.perf_counter_ns()
        value = compute()
        took = time.perf_counter_ns() - started
        with self._lock:
            if len(self._done) < self.limit:
                self._done.setdefault(key, value)
        return value, took

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._done

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)


def message_key(config_key: str, msg: wire.Message) -> tuple[str, bytes]:
    """A received frame's content, frame id aside: equal bytes give equal results."""
    body = wire.encode(dataclasses.replace(msg, frame_id=0))
    return config_key, hashlib.sha256(body).digest()


def overran(work_ns: int | None, sample_ns: int) -> bool:
    """True if real work ran on the critical path and outlasted the sampled time."""
    return work_ns is not None and work_ns > sample_ns


class MdReplay:
    """The MD following a device profile for one configuration: each image's message (EC/SC)
    or prediction (LC) computed once, by image id; frames released at capture + sample."""

    def __init__(self, pacer: Pacer, config: Configuration, model: SplitModel,
                 cache: WorkCache | None = None):
        self.pacer = pacer
        self.config = config
        self.model = model
        self.cache = WorkCache() if cache is None else cache

    @classmethod
    def of(cls, profile: DeviceProfile | None, config: Configuration, model: SplitModel,
           seed: int, cache: WorkCache | None = None) -> "MdReplay | None":
        """``None`` for real processing; ``devices.ProfileError`` if the profile has no MD time
        of this configuration. ``cache``: outputs kept from earlier steps of the same
        configuration, model and frames (a new one when None)."""
        if profile is None:
            return None
        return cls(Pacer.of(profile, config.model, config.name, "md", seed), config, model, cache)

    @property
    def label(self) -> str:
        return self.pacer.label

    def prepare(self, frames: list[Frame]) -> None:
        """Compute every distinct image's output before the first frame (off the critical path)."""
        for frame in frames:
            self.output(0, frame)

    def output(self, frame_id: int, frame: Frame) -> tuple[int | wire.Message, int | None]:
        """LC: the predicted class; EC/SC: the frame's message. With the ns the real work took
        now (``None``: it was ready)."""
        if self.config.mode == "LC":
            value, took = self.cache.get(frame.image_id,
                                         lambda: md_local(self.model, frame.image))
            return int(value), took
        msg, took = self.cache.get(
            frame.image_id, lambda: md_message(self.config, self.model, 0, frame.image))
        return dataclasses.replace(msg, frame_id=frame_id), took

    def release(self, frame_id: int, capture_ns: int, work_ns: int | None) -> bool:
        """Wait until the frame's sampled MD time has elapsed since capture; True if the real
        work on the critical path outlasted it."""
        sample_ns = self.pacer.sample_ns(frame_id)
        wait_until(capture_ns + sample_ns)
        return overran(work_ns, sample_ns)


def warmup_frames(warmup: int, images: int, es_replays: bool) -> int:
    """Warm-up frames of a step: with an ES that replays a profile (it computes each distinct
    message once), at least one per image (frames cycle through the images), so no measured
    frame waits for real work."""
    return max(warmup, images) if es_replays else warmup
