"""What models exist and where they can be split: plain data, importable without torch.

Scenario validation reads this table so that a broken scenario fails in milliseconds, before
any model is built. The model-building code (``teachers``, ``students``) must agree with it;
``tests/test_models.py`` checks that every split point named here exists in the built module.

Split points are the paper's "splittable layers" (Figures 3 and 5), named after the torchvision
module whose output crosses the network. For DenseNets only the stem and transition layers are
candidate split points: a dense block's output has twice the channels at twice the resolution of
the transition that follows it (8x the data), so nobody splits there. With that list the paper's
"2nd split point" of DenseNet-201 is ``transition1`` (128x28x28), whose share of the model's work
(about 30%) matches Table 5's MD time for "Org. 2nd SP" over "MD only" (0.52 s / 1.52 s).
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("LC", "EC", "SC")
"""LC: whole model on the MD. EC: JPEG sent, whole model on the ES. SC: head on MD, tail on ES."""

KINDS = ("teacher", "student")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_size: int
    split_points: tuple[str, ...]
    has_student: bool


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            "densenet169", 224, ("pool0", "transition1", "transition2", "transition3"), True
        ),
        ModelInfo(
            "densenet201", 224, ("pool0", "transition1", "transition2", "transition3"), True
        ),
        ModelInfo("resnet152", 224, ("maxpool", "layer1", "layer2", "layer3", "layer4"), True),
        ModelInfo(
            "inception_v3",
            299,
            (
                "maxpool1",
                "maxpool2",
                "Mixed_5b",
                "Mixed_5c",
                "Mixed_5d",
                "Mixed_6a",
                "Mixed_6b",
                "Mixed_6c",
                "Mixed_6d",
                "Mixed_6e",
                "Mixed_7a",
                "Mixed_7b",
            ),
            True,
        ),
        ModelInfo(
            "mobilenet_v2",
            224,
            ("features.3", "features.6", "features.10", "features.13", "features.17"),
            False,
        ),
        ModelInfo(
            "mnasnet0_5",
            224,
            ("layers.8", "layers.9", "layers.10", "layers.11", "layers.12", "layers.13"),
            False,
        ),
        ModelInfo(
            "mnasnet1_0",
            224,
            ("layers.8", "layers.9", "layers.10", "layers.11", "layers.12", "layers.13"),
            False,
        ),
    )
}

STUDENT_SPLIT_POINTS = ("stem", "bottleneck")
"""Split points of a student head: after its stem (conv, BN, ReLU, max-pool), or after the
injected bottleneck conv (the paper's split point, marked with an asterisk in Tables 6-8)."""

BOTTLENECK_CHANNELS = (3, 6, 9, 12)
"""N_ch values studied in the paper (Figure 10); 12 is the one used in Section V."""

NO_BOTTLENECK_CHANNELS = 64
"""A 'distilled head without bottleneck' keeps the stem's 64 channels at the injected conv."""


def split_points(model: str, kind: str) -> tuple[str, ...]:
    """Names of the split points of ``model`` in its teacher or student form."""
    info = MODELS[model]
    if kind == "student":
        if not info.has_student:
            raise KeyError(f"{model} has no student head (only {students()} do)")
        return STUDENT_SPLIT_POINTS
    return info.split_points


def resolve_split(model: str, kind: str, split: int | str) -> str:
    """A split point given by 1-based index or by name, returned as its name.

    Raises ``ValueError`` naming the valid choices.
    """
    points = split_points(model, kind)
    if isinstance(split, bool):
        raise ValueError(f"split must be a 1-based index or one of {points}, not {split!r}")
    if isinstance(split, int):
        if not 1 <= split <= len(points):
            raise ValueError(
                f"split index {split} out of range for {kind} {model}: 1..{len(points)} ({points})"
            )
        return points[split - 1]
    if split not in points:
        raise ValueError(f"unknown split point {split!r} for {kind} {model}: one of {points}")
    return split


def students() -> tuple[str, ...]:
    return tuple(n for n, m in MODELS.items() if m.has_student)
