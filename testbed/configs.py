"""Configurations to compare: what runs where and what crosses the link.

A configuration is one row of the paper's Table 5. ``TABLE5`` names its five rows so a scenario
can say ``configurations: [md-only, es-only, org-split2, mimic-split2, mimic-bottleneck]`` and
get exactly the paper's comparison for any model that has a student head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from testbed.models import catalog

COMPRESSIONS = ("none", "zlib")


@dataclass(frozen=True)
class Configuration:
    """One configuration to benchmark.

    mode:     LC (all on the MD), EC (JPEG to the ES, all on the ES) or SC (split).
    kind:     ``teacher`` (unmodified torchvision model) or ``student`` (distilled head with an
              injected bottleneck, Tables 6-8, followed by the unchanged teacher tail).
    split:    SC only: split point, by name or 1-based index (see ``catalog``).
    n_ch:     student only: bottleneck channels; ``None`` keeps the stem's width (no bottleneck).
    quantize: SC only: send the split tensor as 8-bit (scale, zero point) instead of float32.
    compression: SC only: lossless compression of the payload (``none`` or ``zlib``).
    jpeg_quality: EC only: JPEG quality of the resized image.
    jpeg_size: EC only: side (px) of the square JPEG the MD sends (resized and centre-cropped
              as for the model's input), which the ES decodes and resizes to the model's input;
              ``None``: the model's input size. ``jpeg_size: 432, jpeg_quality: 98`` sends
              74.6 KB per builtin image, the paper's Table 4 JPEG (74.34 KB); the default
              (224 px at quality 95) sends about 18.8 KB.
    weights:  optional checkpoint path (teacher state dict, or student state dict).
    """

    name: str
    mode: str
    model: str
    kind: str = "teacher"
    split: str | None = None
    n_ch: int | None = None
    quantize: bool = True
    compression: str = "none"
    jpeg_quality: int = 95
    weights: str | None = None
    jpeg_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Configuration":
        return cls(**data)

    def validated(self) -> "Configuration":
        """This configuration with its split resolved to a name; ``ValueError`` if impossible."""
        problems = self.problems()
        if problems:
            raise ValueError(f"configuration {self.name!r}: " + "; ".join(problems))
        if self.mode == "SC":
            return replace(self, split=catalog.resolve_split(self.model, self.kind, self.split))
        return self

    def problems(self) -> list[str]:
        """Every reason this configuration cannot run, as ``field: what was expected``."""
        out: list[str] = []
        if self.mode not in catalog.MODES:
            out.append(f"mode: expected one of {catalog.MODES}, got {self.mode!r}")
        if self.model not in catalog.MODELS:
            out.append(f"model: expected one of {tuple(catalog.MODELS)}, got {self.model!r}")
            return out
        if self.kind not in catalog.KINDS:
            out.append(f"kind: expected one of {catalog.KINDS}, got {self.kind!r}")
            return out
        if self.kind == "student" and not catalog.MODELS[self.model].has_student:
            out.append(f"kind: {self.model} has no student head (only {catalog.students()})")
            return out
        if self.kind == "student" and self.mode != "SC":
            out.append("kind: a student head only runs split (mode SC)")
        if self.mode == "SC":
            if self.split is None:
                out.append("split: mode SC needs a split point")
            else:
                try:
                    catalog.resolve_split(self.model, self.kind, self.split)
                except (ValueError, KeyError) as exc:
                    out.append(f"split: {exc}")
        elif self.split is not None:
            out.append(f"split: only mode SC splits the model, mode is {self.mode}")
        if self.n_ch is not None:
            if self.kind != "student":
                out.append("n_ch: only a student head has a bottleneck")
            elif not isinstance(self.n_ch, int) or isinstance(self.n_ch, bool) or self.n_ch < 1:
                out.append(f"n_ch: expected a positive integer, got {self.n_ch!r}")
        if self.compression not in COMPRESSIONS:
            out.append(f"compression: expected one of {COMPRESSIONS}, got {self.compression!r}")
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            out.append(f"jpeg_quality: expected an integer 1..100, got {self.jpeg_quality!r}")
        if self.jpeg_size is not None:
            if self.mode != "EC":
                out.append(f"jpeg_size: only mode EC sends a JPEG, mode is {self.mode}")
            elif (not isinstance(self.jpeg_size, int) or isinstance(self.jpeg_size, bool)
                  or not 32 <= self.jpeg_size <= 2048):
                out.append(f"jpeg_size: expected an integer 32..2048 (px), got {self.jpeg_size!r}")
        return out


def table5(model: str = "densenet201", n_ch: int = 12) -> dict[str, Configuration]:
    """The five rows of Table 5 for ``model`` (which must have a student head)."""
    return {
        c.name: c
        for c in (
            Configuration("md-only", "LC", model),
            Configuration("es-only", "EC", model),
            Configuration("org-split2", "SC", model, split=catalog.MODELS[model].split_points[1]),
            Configuration("mimic-split2", "SC", model, kind="student", split="bottleneck"),
            Configuration(
                "mimic-bottleneck", "SC", model, kind="student", split="bottleneck", n_ch=n_ch
            ),
        )
    }


TABLE5_NAMES = tuple(table5())
