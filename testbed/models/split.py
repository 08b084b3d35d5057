"""The one entry point the runtime uses: a configuration in, the modules each side runs out.

What runs where:

======  ===============================  ==============================
mode    mobile device (``head``)         edge server (``tail``)
======  ===============================  ==============================
LC      the whole model                  nothing
EC      nothing (it sends a JPEG)        the whole model
SC      the model up to the split point  the rest of the model
======  ===============================  ==============================

Both sides build the whole model and keep their part. Random initialisation is seeded, so an MD
head and an ES tail built in separate processes from the same configuration and seed form one
consistent model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from testbed.configs import Configuration
from testbed.models import catalog
from testbed.models.students import build_student, split_student
from testbed.models.teachers import (
    WeightsInfo,
    build_teacher,
    output_shape,
    resolve_weights,
    split_teacher,
)

logger = logging.getLogger(__name__)

SIDES = ("md", "es", "both")
"""``md``: build only the mobile device's part; ``es``: only the edge server's; ``both``."""


@dataclass
class SplitModel:
    """The modules of one configuration, ready for inference (eval mode, no gradients).

    config:            the configuration, validated (``split`` resolved to a name).
    head:              runs on the MD: the whole model for LC, the head for SC, ``None`` for EC
                       (and ``None`` when built for side ``es``).
    tail:              runs on the ES: the whole model for EC, the tail for SC, ``None`` for LC
                       (and ``None`` when built for side ``md``).
    input_size:        side of the square input image (224 or 299).
    head_output_shape: (C, H, W) of the tensor sent in SC; ``None`` in LC and EC.
    weights:           which weights the model carries.
    """

    config: Configuration
    head: nn.Module | None
    tail: nn.Module | None
    input_size: int
    head_output_shape: tuple[int, ...] | None
    weights: WeightsInfo

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(3, H, W) of one input image."""
        return (3, self.input_size, self.input_size)


def build_split(config: Configuration, side: str = "both", seed: int = 0) -> SplitModel:
    """Build what ``side`` runs for ``config``; ``ValueError`` for an invalid configuration or
    side, ``CheckpointError`` for a checkpoint that does not fit.

    A side with nothing to run (``es`` in LC, ``md`` in EC) builds no model at all.
    """
    if side not in SIDES:
        raise ValueError(f"side: expected one of {SIDES}, got {side!r}")
    config = config.validated()
    size = catalog.MODELS[config.model].input_size
    needs_md = side in ("md", "both") and config.mode in ("LC", "SC")
    needs_es = side in ("es", "both") and config.mode in ("EC", "SC")
    if not (needs_md or needs_es):
        logger.info("%s: nothing runs on side %s in mode %s", config.name, side, config.mode)
        weights = resolve_weights(config.model, config.weights)
        return SplitModel(config, None, None, size, None, weights)

    head, tail, weights = _build_halves(config, seed)
    shape = output_shape(head, (3, size, size)) if config.mode == "SC" else None
    for module in (head, tail):
        if module is not None:
            module.eval().requires_grad_(False)
    if side == "md":
        tail = None
    elif side == "es":
        head = None
    logger.info(
        "%s: built %s %s (%s) for side %s, head output %s, %s weights",
        config.name, config.kind, config.model, config.mode, side, shape, weights.source,
    )  # fmt: skip
    return SplitModel(config, head, tail, size, shape, weights)


def _build_halves(
    config: Configuration, seed: int
) -> tuple[nn.Module | None, nn.Module | None, WeightsInfo]:
    """(MD module, ES module, weights) of a validated configuration."""
    if config.kind == "student":
        student, weights = build_student(config.model, config.n_ch, config.weights, seed)
        head, tail = split_student(student, config.split)
        return head, tail, weights
    model, weights = build_teacher(config.model, config.weights, seed)
    if config.mode == "LC":
        return model, None, weights
    if config.mode == "EC":
        return None, model, weights
    head, tail = split_teacher(model, config.split)
    return head, tail, weights
