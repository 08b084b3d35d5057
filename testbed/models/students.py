"""Student models: a distilled head with an injected bottleneck, followed by the teacher's tail.

The heads are those of the paper's Tables 6-8 (the HND reference implementation's
``Bottleneck4DenseNet``, ``Bottleneck4ResNet152`` and ``Bottleneck4Inception3``). A head has
three parts:

* ``stem``: conv 7x7/2 (64 channels), BN, ReLU, max-pool 3x3/2;
* ``bottleneck``: BN, ReLU, conv 2x2/2 down to ``n_ch`` channels (the injected bottleneck);
* ``decoder``: BN-ReLU-conv 2x2 blocks and an average pool that restore the shape of the teacher's
  output at the layer the head replaces (DenseNet ``transition2``, ResNet ``layer2``,
  Inception ``maxpool2``).

All convolutions are bias-free. Table 7 prints ``p=0`` for the first two 512-channel convs of the
ResNet-152 head; the reference implementation (and the 28x28 output the tail needs) has ``p=1``,
which is what is built here.

A student splits after its ``stem`` or after its ``bottleneck`` conv
(``catalog.STUDENT_SPLIT_POINTS``): the mobile device runs up to the split, the edge server the
rest of the head and the teacher tail.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from testbed.models import catalog
from testbed.models.teachers import (
    WeightsInfo,
    build_teacher,
    file_sha256,
    load_checked,
    load_state_dict_file,
    split_teacher,
)

logger = logging.getLogger(__name__)

REPLACED_UNTIL: dict[str, str] = {
    "densenet169": "transition2",
    "densenet201": "transition2",
    "resnet152": "layer2",
    "inception_v3": "maxpool2",
}
"""The teacher split point whose output the student head reproduces: the head replaces the
teacher's modules up to and including it, and the student's tail is the teacher's from there."""


class StudentHead(nn.Module):
    """``decoder(bottleneck(stem(x)))``: the distilled head of a student model."""

    def __init__(self, stem: nn.Sequential, bottleneck: nn.Sequential, decoder: nn.Sequential):
        super().__init__()
        self.stem = stem
        self.bottleneck = bottleneck
        self.decoder = decoder

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.bottleneck(self.stem(x)))


class StudentModel(nn.Module):
    """A student head followed by the teacher's tail: ``tail(head(x))`` gives the logits."""

    def __init__(self, name: str, n_ch: int | None, head: StudentHead, tail: nn.Module):
        super().__init__()
        self.name = name
        self.n_ch = n_ch
        self.head = head
        self.tail = tail

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.head(x))


# --------------------------------------------------------------------------------------------
# Heads


def bottleneck_channels(n_ch: int | None) -> int:
    """Channels of the injected conv: ``n_ch``, or 64 for a head without bottleneck (``None``)."""
    if n_ch is None:
        return catalog.NO_BOTTLENECK_CHANNELS
    if isinstance(n_ch, bool) or not isinstance(n_ch, int) or n_ch < 1:
        raise ValueError(f"n_ch: expected a positive integer or None, got {n_ch!r}")
    return n_ch


def bn_relu_conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, padding: int
) -> list[nn.Module]:
    """BatchNorm(in_ch), ReLU, Conv2d(in_ch -> out_ch, bias=False)."""
    return [
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=padding, bias=False),
    ]


def stem(conv_padding: int, pool_padding: int) -> nn.Sequential:
    """Conv(3->64, 7x7, stride 2), BN, ReLU, MaxPool(3x3, stride 2)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=conv_padding, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=pool_padding),
    )


def bottleneck(n_ch: int | None) -> nn.Sequential:
    """BN(64), ReLU, Conv(64 -> n_ch, 2x2, stride 2, padding 1): the injected bottleneck."""
    return nn.Sequential(*bn_relu_conv(64, bottleneck_channels(n_ch), 2, 2, 1))


def decoder(n_ch: int | None, convs: Sequence[tuple[int, int]], pool_stride: int) -> nn.Sequential:
    """BN-ReLU-conv 2x2 blocks ``(out_channels, padding)`` from ``n_ch`` channels, then
    AvgPool(2x2, ``pool_stride``)."""
    layers: list[nn.Module] = []
    in_ch = bottleneck_channels(n_ch)
    for out_ch, padding in convs:
        layers += bn_relu_conv(in_ch, out_ch, 2, 1, padding)
        in_ch = out_ch
    layers.append(nn.AvgPool2d(kernel_size=2, stride=pool_stride))
    return nn.Sequential(*layers)


def densenet_head(n_ch: int | None = 12) -> StudentHead:
    """Table 6 (DenseNet-169 and -201): 3x224x224 -> n_ch x29x29 -> 256x14x14."""
    convs = ((512, 1), (512, 1), (256, 0), (256, 0), (256, 0))
    return StudentHead(stem(3, 1), bottleneck(n_ch), decoder(n_ch, convs, pool_stride=2))


def resnet152_head(n_ch: int | None = 12) -> StudentHead:
    """Table 7 (ResNet-152): 3x224x224 -> n_ch x29x29 -> 512x28x28."""
    convs = ((512, 1), (512, 1), (512, 0), (512, 0))
    return StudentHead(stem(3, 1), bottleneck(n_ch), decoder(n_ch, convs, pool_stride=1))


def inception_v3_head(n_ch: int | None = 12) -> StudentHead:
    """Table 8 (Inception-v3): 3x299x299 -> n_ch x37x37 -> 192x35x35."""
    convs = ((256, 1), (256, 0), (192, 0))
    return StudentHead(stem(0, 0), bottleneck(n_ch), decoder(n_ch, convs, pool_stride=1))


def build_student_head(name: str, n_ch: int | None = 12) -> StudentHead:
    """The (randomly initialised) student head of teacher ``name``."""
    if name in ("densenet169", "densenet201"):
        return densenet_head(n_ch)
    if name == "resnet152":
        return resnet152_head(n_ch)
    if name == "inception_v3":
        return inception_v3_head(n_ch)
    raise ValueError(f"{name!r} has no student head: one of {catalog.students()}")


def teacher_head(name: str, teacher: nn.Module) -> nn.Sequential:
    """The teacher's modules that a student head replaces (up to ``REPLACED_UNTIL[name]``)."""
    return split_teacher(teacher, REPLACED_UNTIL[_check_student(name)])[0]


# --------------------------------------------------------------------------------------------
# Whole students


def build_student(
    name: str, n_ch: int | None = 12, checkpoint: str | Path | None = None, seed: int = 0
) -> tuple[StudentModel, WeightsInfo]:
    """The student of teacher ``name`` (head with ``n_ch`` bottleneck channels + teacher tail).

    With ``checkpoint``: a state dict of the whole ``StudentModel`` (keys ``head.*`` and
    ``tail.*``, as ``torch.save(student.state_dict(), path)`` writes), loaded strictly;
    ``CheckpointError`` names missing and unexpected keys or mismatched shapes.
    Without: every weight is random under ``seed`` (pretrained teacher weights are not used, since
    an untrained head makes them pointless). The model is in eval mode.
    """
    name = _check_student(name)
    teacher, _ = build_teacher(name, seed=seed, transform_input=False, use_cache=False)
    _, tail = split_teacher(teacher, REPLACED_UNTIL[name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_student_head(name, n_ch)
    student = StudentModel(name, n_ch, head, tail)
    info = WeightsInfo("random")
    if checkpoint is not None:
        state = load_state_dict_file(checkpoint)
        load_checked(student, state, what=f"{name} student (N_ch={n_ch})", origin=str(checkpoint))
        info = WeightsInfo("checkpoint", str(checkpoint), file_sha256(checkpoint))
    logger.info("built student %s N_ch=%s with %s weights", name, n_ch, info.source)
    return student.eval(), info


def split_student(student: StudentModel, split: str) -> tuple[nn.Sequential, nn.Sequential]:
    """``(head, tail)`` of ``student`` cut after its ``stem`` or its ``bottleneck`` conv.

    ``tail(head(x)) == student(x)``; modules are shared with ``student``, not copied.
    """
    parts = OrderedDict(
        stem=student.head.stem,
        bottleneck=student.head.bottleneck,
        decoder=student.head.decoder,
        tail=student.tail,
    )
    if split not in catalog.STUDENT_SPLIT_POINTS:
        raise ValueError(
            f"unknown student split point {split!r}: one of {catalog.STUDENT_SPLIT_POINTS}"
        )
    cut = list(parts).index(split) + 1
    items = list(parts.items())
    return nn.Sequential(OrderedDict(items[:cut])), nn.Sequential(OrderedDict(items[cut:]))


def _check_student(name: str) -> str:
    if name not in REPLACED_UNTIL:
        raise ValueError(f"{name!r} has no student head: one of {catalog.students()}")
    return name
