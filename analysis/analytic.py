"""The analytic model of Section V: total delay vs data rate, gains, crossing points.

Every option (local, edge or split computing) has the form of Section II:

    T(r) = head time on the MD + payload * 8 / r + tail time on the ES

with ``r`` the effective data rate (bit/s; figures use Mbit/s = 1e6 bit/s):

- LC: head = the full model on the MD, no payload, no tail;
- EC: no head (the JPEG is ready), payload = the resized JPEG, tail = the full model on the ES;
- SC: head and tail of the split model, payload = the (quantized) split tensor.

Gains are ratios of totals (``T_LC / T_SC``, ``T_EC / T_SC``, ``T_LC(MobileNet v2) / T_SC``:
Figures 11-13). Two options with fixed parts ``a``, ``b`` and payloads ``Pa``, ``Pb`` take the same
time at

    r* = 8 (Pa - Pb) / (b - a)

(a crossing exists when that is positive and finite); below ``r*`` the option with the smaller
payload wins. :func:`crossing` computes it in closed form, with which option wins on each side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis import paper
from analysis.profiles import DeviceProfile, Payloads, SplitShares

MBIT = 1e6


@dataclass(frozen=True)
class Option:
    """One way of computing a frame: fixed seconds on each side and bytes in between."""

    label: str
    mode: str
    head_s: float
    payload_bytes: float
    tail_s: float
    notes: tuple[str, ...] = ()

    @property
    def fixed_s(self) -> float:
        return self.head_s + self.tail_s

    def total_s(self, rate_mbit):
        """T at data rate(s) ``rate_mbit`` (Mbit/s); a scalar or an array like the input."""
        r = np.asarray(rate_mbit, dtype=float)
        out = self.fixed_s + self.payload_bytes * 8.0 / (r * MBIT)
        return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class Crossing:
    """Where ``a`` and ``b`` take the same time; ``below``/``above`` name the faster one."""

    a: Option
    b: Option
    rate_mbit: float
    total_s: float
    below: str
    above: str

    def describe(self) -> str:
        return (f"{self.a.label} = {self.b.label} at {self.rate_mbit:.3g} Mbit/s "
                f"(T = {self.total_s:.3g} s): {self.below} faster below, {self.above} above")


def crossing_mbit(a: Option, b: Option) -> float | None:
    """The data rate (Mbit/s) at which ``a`` and ``b`` take the same time; ``None`` if never."""
    d_fixed = b.fixed_s - a.fixed_s
    d_bits = 8.0 * (a.payload_bytes - b.payload_bytes)
    if d_fixed == 0 or d_bits == 0:
        return None
    r = d_bits / d_fixed / MBIT
    return r if r > 0 and np.isfinite(r) else None


def crossing(a: Option, b: Option) -> Crossing | None:
    r = crossing_mbit(a, b)
    if r is None:
        return None
    small, large = (a, b) if a.payload_bytes < b.payload_bytes else (b, a)
    return Crossing(a, b, r, a.total_s(r), below=small.label, above=large.label)


def always_faster(a: Option, b: Option) -> str | None:
    """If one option is faster at every rate, its label (``None`` if they cross or tie)."""
    if crossing_mbit(a, b) is not None:
        return None
    if a.fixed_s <= b.fixed_s and a.payload_bytes <= b.payload_bytes and (a.fixed_s, a.payload_bytes) != (b.fixed_s, b.payload_bytes):
        return a.label
    if b.fixed_s <= a.fixed_s and b.payload_bytes <= a.payload_bytes and (a.fixed_s, a.payload_bytes) != (b.fixed_s, b.payload_bytes):
        return b.label
    return None


# ---------------------------------------------------------------------- the three options


def _name(model: str) -> str:
    return paper.MODEL_NAMES.get(model, model)


def local(md: DeviceProfile, model: str) -> Option:
    return Option(f"LC {_name(model)} on {md.name}", "LC", md.full(model), 0.0, 0.0,
                  (f"{md.name}: {md.source}",))


def edge(es: DeviceProfile, model: str, payloads: Payloads) -> Option:
    """EC: the JPEG over the link, the full model on the ES (JPEG encoding on the MD ignored,
    as in the paper's Section V-A)."""
    return Option(f"EC {_name(model)} on {es.name}", "EC", 0.0, payloads.jpeg_bytes, es.full(model),
                  (f"{es.name}: {es.source}", f"payload: {payloads.source}"))


def split(md: DeviceProfile, es: DeviceProfile, model: str, payloads: Payloads,
          shares: SplitShares | None = None, head_s: float | None = None,
          tail_s: float | None = None) -> Option:
    """SC: measured head/tail seconds if given, else scaled from full-model times by ``shares``."""
    notes = [f"payload: {payloads.source}"]
    if head_s is None or tail_s is None:
        if shares is None:
            raise ValueError("split: give head_s and tail_s, or shares to scale them")
        if head_s is None:
            head_s = shares.head * md.full(model)
        if tail_s is None:
            tail_s = shares.tail * es.full(model)
        notes.append(f"head/tail scaled from full-model times: {shares.source}")
    return Option(f"SC {_name(model)} {md.name}→{es.name}", "SC", head_s, payloads.split_bytes,
                  tail_s, tuple(notes))


# ---------------------------------------------------------------------- gains


def gain(numerator: Option, denominator: Option, rate_mbit):
    """``T_numerator / T_denominator`` at the given rate(s): > 1 means the denominator wins."""
    return numerator.total_s(rate_mbit) / np.asarray(denominator.total_s(rate_mbit))


@dataclass(frozen=True)
class PairAnalysis:
    """LC, EC and SC of one model on one MD-ES pair, plus local MobileNet v2, and crossings."""

    md: DeviceProfile
    es: DeviceProfile
    model: str
    lc: Option
    ec: Option
    sc: Option
    mobile: Option

    def crossings(self) -> dict[str, Crossing | None]:
        return {
            "SC vs EC": crossing(self.sc, self.ec),
            "SC vs LC": crossing(self.sc, self.lc),
            "SC vs local MobileNet v2": crossing(self.sc, self.mobile),
            "EC vs LC": crossing(self.ec, self.lc),
            "EC vs local MobileNet v2": crossing(self.ec, self.mobile),
        }


def analyse_pair(md: DeviceProfile, es: DeviceProfile, model: str, payloads: Payloads,
                 shares: SplitShares, baseline: str = "mobilenet_v2") -> PairAnalysis:
    return PairAnalysis(md, es, model, local(md, model), edge(es, model, payloads),
                        split(md, es, model, payloads, shares), local(md, baseline))


def crossing_text(name: str, c: Crossing | None, a: Option, b: Option) -> str:
    """One line for a report: the crossing, or who always wins."""
    if c is not None:
        return f"{name}: {c.rate_mbit:.3g} Mbit/s ({c.below} faster below, {c.above} above)"
    winner = always_faster(a, b)
    return f"{name}: no crossing ({winner or 'neither'} faster at every rate)"
