"""Teacher models: unmodified torchvision classifiers, their weights, and where they split.

A teacher is built from torchvision's own definition. Its weights come from, in this order:

1. a checkpoint given by the caller (a state dict, loaded with ``weights_only=True``);
2. torchvision's pretrained ``DEFAULT`` weights, if that file is already in the local torch hub
   cache (``torch.hub.get_dir()/checkpoints/``); nothing is ever downloaded;
3. random initialisation under a fixed seed, so that two processes building the same teacher
   (the MD and the ES) get identical weights.

Splitting a teacher at a split point (names in ``catalog.MODELS``) gives a head and a tail whose
composition computes exactly the model's forward pass. The head's and tail's state-dict keys are
the torchvision model's own keys (``features.conv0.weight``, ``layer3.0.conv1.weight``, ...).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torchvision import models as tvm

from testbed.models import catalog

logger = logging.getLogger(__name__)

WeightsSource = Literal["checkpoint", "torchvision-local", "random"]


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a built model carries.

    source: ``checkpoint`` (a file given by the user), ``torchvision-local`` (torchvision's
            pretrained file found in the local torch hub cache) or ``random`` (seeded init).
    path:   the file the weights were read from; ``None`` for random weights.
    sha256: hex digest of that file; ``None`` for random weights.
    """

    source: WeightsSource
    path: str | None = None
    sha256: str | None = None


class CheckpointError(ValueError):
    """A checkpoint file does not fit the model it is loaded into."""


@dataclass(frozen=True)
class SplitPointInfo:
    """Output of a model at one split point, for a batch of one input image."""

    name: str
    shape: tuple[int, ...]
    elements: int
    relative: float
    """``elements`` over the input tensor's element count (3*224*224 or 3*299*299)."""


_TORCHVISION: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "densenet169": (tvm.densenet169, tvm.DenseNet169_Weights),
    "densenet201": (tvm.densenet201, tvm.DenseNet201_Weights),
    "resnet152": (tvm.resnet152, tvm.ResNet152_Weights),
    "inception_v3": (tvm.inception_v3, tvm.Inception_V3_Weights),
    "mobilenet_v2": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights),
    "mnasnet0_5": (tvm.mnasnet0_5, tvm.MNASNet0_5_Weights),
    "mnasnet1_0": (tvm.mnasnet1_0, tvm.MNASNet1_0_Weights),
}

# Old torchvision DenseNet checkpoints name dense-layer parts 'norm.1', 'conv.2', ...; the
# modules are now 'norm1', 'conv2'. Same pattern as torchvision.models.densenet._load_state_dict.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


# --------------------------------------------------------------------------------------------
# Building


def model_names() -> tuple[str, ...]:
    """Names of the teachers this module builds (the keys of ``catalog.MODELS``)."""
    return tuple(_TORCHVISION)


def input_size(name: str) -> int:
    """Side of the square input image of ``name`` (224, or 299 for Inception-v3)."""
    return catalog.MODELS[_check_name(name)].input_size


def torchvision_weights_path(name: str) -> Path:
    """Where torchvision keeps the ``DEFAULT`` pretrained weights of ``name`` once downloaded.

    The file may not exist; this function never downloads it.
    """
    _, weights_enum = _TORCHVISION[_check_name(name)]
    basename = weights_enum.DEFAULT.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / basename


def resolve_weights(
    name: str, checkpoint: str | Path | None = None, use_cache: bool = True
) -> WeightsInfo:
    """The weights ``build_teacher`` would use, without building the model or reading files.

    The sha256 is left ``None`` here (hashing a large file is done when it is loaded).
    """
    if checkpoint is not None:
        return WeightsInfo("checkpoint", str(checkpoint))
    local = torchvision_weights_path(name)
    if use_cache and local.is_file():
        return WeightsInfo("torchvision-local", str(local))
    return WeightsInfo("random")


def build_teacher(
    name: str,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    transform_input: bool | None = None,
    use_cache: bool = True,
) -> tuple[nn.Module, WeightsInfo]:
    """Build the torchvision teacher ``name`` in eval mode, with the weights described above.

    ``seed`` drives the random initialisation (the global RNG state is left untouched).
    ``transform_input`` only applies to Inception-v3: ``None`` means ``True`` with torchvision's
    pretrained weights (as torchvision does) and ``False`` otherwise.
    ``use_cache=False`` skips torchvision's cached weights (random init unless ``checkpoint``).
    Raises ``CheckpointError`` if the checkpoint does not fit the model.
    """
    name = _check_name(name)
    info = resolve_weights(name, checkpoint, use_cache)
    kwargs: dict[str, Any] = {}
    if name == "inception_v3":
        if transform_input is None:
            transform_input = info.source == "torchvision-local"
        kwargs = {"aux_logits": False, "init_weights": True, "transform_input": transform_input}
    constructor, _ = _TORCHVISION[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor(weights=None, **kwargs)
    if info.path is not None:
        state = load_state_dict_file(info.path)
        if name.startswith("densenet"):
            state = _rename_old_densenet_keys(state)
        if name == "inception_v3":
            state = _drop_aux_logits(state)
        load_checked(model, state, what=f"{name} teacher", origin=info.path)
        info = WeightsInfo(info.source, info.path, file_sha256(info.path))
    origin = f"from {info.path}" if info.path else f"seed {seed}"
    logger.info("built teacher %s with %s weights (%s)", name, info.source, origin)
    return model.eval(), info


def file_sha256(path: str | Path) -> str:
    """Hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict_file(path: str | Path) -> Mapping[str, Tensor]:
    """Read a state dict saved with ``torch.save`` (``weights_only=True``, on the CPU).

    A dict holding the state dict under ``"state_dict"`` or ``"model"`` (a common training
    checkpoint layout) is unwrapped. Raises ``CheckpointError`` if the file holds no state dict.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a weights-only checkpoint: {exc}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
                logger.info("%s: using the state dict stored under %r", path, key)
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (names to tensors), got {type(obj)}")
    return obj


def load_checked(module: nn.Module, state: Mapping[str, Tensor], what: str, origin: str) -> None:
    """Load ``state`` into ``module`` strictly; ``CheckpointError`` names what does not fit."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches are raised even when not strict
        own = module.state_dict()
        mismatched = [
            f"{k} {list(v.shape)} (model {list(own[k].shape)})"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ]
        detail = f"{len(mismatched)} shape mismatches {_preview(mismatched)}" if mismatched else exc
        raise CheckpointError(f"{origin}: does not fit the {what}: {detail}") from exc
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing keys {_preview(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected keys {_preview(result.unexpected_keys)}"
        )
    if problems:
        raise CheckpointError(f"{origin}: not a state dict of the {what}: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Splitting


class InceptionInputTransform(nn.Module):
    """Inception-v3's ``transform_input``: re-normalise ImageNet-normalised input to [-1, 1]."""

    def forward(self, x: Tensor) -> Tensor:
        x0 = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x1 = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x2 = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x0, x1, x2), 1)


class SpatialMean(nn.Module):
    """Mean over height and width (MNASNet's global pooling, ``x.mean([2, 3])``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean([2, 3])


@dataclass(frozen=True)
class Stage:
    """One step of a teacher's forward pass, in order.

    name:   the split-point spelling of this step (``transition1``, ``layer2``, ``features.3``).
    parent: the torchvision container holding it (``features``, ``layers``) or ``""``.
    key:    its child name inside ``parent`` (or its top-level name).
    """

    name: str
    parent: str
    key: str
    module: nn.Module


def stages(model: nn.Module) -> list[Stage]:
    """The teacher's forward pass as a list of stages whose composition equals ``model(x)``.

    The glue torchvision writes as functional calls (relu, pooling, flatten) becomes
    parameter-free modules.
    """
    if isinstance(model, tvm.DenseNet):
        return [
            *_children(model.features, "features", qualify=False),
            Stage("relu", "", "relu", nn.ReLU(inplace=True)),
            Stage("avgpool", "", "avgpool", nn.AdaptiveAvgPool2d((1, 1))),
            Stage("flatten", "", "flatten", nn.Flatten(1)),
            Stage("classifier", "", "classifier", model.classifier),
        ]
    if isinstance(model, tvm.ResNet):
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        return [
            *_top_level(model, names),
            Stage("avgpool", "", "avgpool", model.avgpool),
            Stage("flatten", "", "flatten", nn.Flatten(1)),
            Stage("fc", "", "fc", model.fc),
        ]
    if isinstance(model, tvm.Inception3):
        names = (
            "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
            "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
            "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
            "avgpool", "dropout",
        )  # fmt: skip
        transform = (
            [Stage("transform_input", "", "transform_input", InceptionInputTransform())]
            if model.transform_input
            else []
        )
        return [
            *transform,
            *_top_level(model, names),
            Stage("flatten", "", "flatten", nn.Flatten(1)),
            Stage("fc", "", "fc", model.fc),
        ]
    if isinstance(model, tvm.MobileNetV2):
        return [
            *_children(model.features, "features", qualify=True),
            Stage("avgpool", "", "avgpool", nn.AdaptiveAvgPool2d((1, 1))),
            Stage("flatten", "", "flatten", nn.Flatten(1)),
            Stage("classifier", "", "classifier", model.classifier),
        ]
    if isinstance(model, tvm.MNASNet):
        return [
            *_children(model.layers, "layers", qualify=True),
            Stage("mean", "", "mean", SpatialMean()),
            Stage("classifier", "", "classifier", model.classifier),
        ]
    raise TypeError(f"cannot split a {type(model).__name__}: not one of the teachers")


def stage_names(model: nn.Module) -> tuple[str, ...]:
    """Every name ``split_teacher`` accepts for ``model`` (a superset of the catalog's)."""
    return tuple(s.name for s in stages(model))


def split_teacher(model: nn.Module, split: str) -> tuple[nn.Sequential, nn.Sequential]:
    """``(head, tail)`` of ``model`` cut after the stage ``split``: ``tail(head(x)) == model(x)``.

    Head and tail share the model's modules (no copy). Raises ``ValueError`` for an unknown
    split point.
    """
    all_stages = stages(model)
    names = [s.name for s in all_stages]
    if split not in names:
        kind = type(model).__name__
        raise ValueError(f"unknown split point {split!r} for {kind}: one of {names}")
    cut = names.index(split) + 1
    return assemble(all_stages[:cut]), assemble(all_stages[cut:])


def assemble(parts: Sequence[Stage]) -> nn.Sequential:
    """A ``Sequential`` running ``parts`` in order, keeping torchvision's module names.

    Consecutive stages from one container (``features``) are grouped under that name, so the
    result's state-dict keys are the original model's keys.
    """
    top: OrderedDict[str, nn.Module] = OrderedDict()
    previous = ""
    for stage in parts:
        if not stage.parent:
            top[stage.key] = stage.module
        else:
            if stage.parent != previous:
                if stage.parent in top:
                    raise ValueError(f"stages of {stage.parent!r} are not consecutive")
                top[stage.parent] = nn.Sequential()
            top[stage.parent].add_module(stage.key, stage.module)
        previous = stage.parent
    return nn.Sequential(top)


# --------------------------------------------------------------------------------------------
# Shapes


def output_shape(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of ``module``'s output for one input of shape ``input_shape`` (no batch dimension).

    Computed on the ``meta`` device: no arithmetic is done and the module is not changed.
    """
    tensors = {k: v.to("meta") for k, v in _params_and_buffers(module)}
    x = torch.zeros((1, *input_shape), device="meta")
    with torch.no_grad():
        y = functional_call(module, tensors, (x,))
    return tuple(y.shape[1:])


def describe_splits(name: str, points: Iterable[str] | None = None) -> list[SplitPointInfo]:
    """Output shape, element count and size relative to the input at each split point of
    teacher ``name`` (the catalog's split points unless ``points`` is given).

    This is the data of the paper's Figures 3 and 5. The model is built on the ``meta`` device,
    so the table costs milliseconds and no weights.
    """
    name = _check_name(name)
    wanted = tuple(catalog.MODELS[name].split_points if points is None else points)
    size = input_size(name)
    constructor, _ = _TORCHVISION[name]
    kwargs = {"aux_logits": False, "init_weights": True} if name == "inception_v3" else {}
    with torch.device("meta"):
        model = constructor(weights=None, **kwargs).eval()
    all_stages = stages(model)
    unknown = set(wanted) - {s.name for s in all_stages}
    if unknown:
        raise ValueError(f"unknown split points {sorted(unknown)} for {name}")
    input_elements = 3 * size * size
    x = torch.zeros(1, 3, size, size, device="meta")
    table = []
    with torch.no_grad():
        for stage in all_stages:
            x = stage.module(x)
            if stage.name in wanted:
                shape = tuple(x.shape[1:])
                elements = x[0].numel()
                table.append(SplitPointInfo(stage.name, shape, elements, elements / input_elements))
    return table


# --------------------------------------------------------------------------------------------
# Helpers


def _check_name(name: str) -> str:
    if name not in _TORCHVISION:
        raise ValueError(f"unknown model {name!r}: one of {tuple(_TORCHVISION)}")
    return name


def _children(container: nn.Module, parent: str, qualify: bool) -> list[Stage]:
    return [
        Stage(f"{parent}.{key}" if qualify else key, parent, key, module)
        for key, module in container.named_children()
    ]


def _top_level(model: nn.Module, names: Iterable[str]) -> list[Stage]:
    return [Stage(n, "", n, getattr(model, n)) for n in names]


def _params_and_buffers(module: nn.Module) -> Iterable[tuple[str, Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


def _preview(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}]"


def _with_metadata(new: OrderedDict[str, Tensor], old: Mapping[str, Tensor]) -> OrderedDict:
    """``new`` carrying ``old``'s ``_metadata`` (module versions that some loaders need)."""
    metadata = getattr(old, "_metadata", None)
    if metadata is not None:
        new._metadata = metadata  # type: ignore[attr-defined]
    return new


def _rename_old_densenet_keys(state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    renamed = OrderedDict()
    for key, value in state.items():
        match = _DENSENET_OLD_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return _with_metadata(renamed, state)


def _drop_aux_logits(state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """Inception-v3 without its auxiliary classifier (unused in eval mode)."""
    kept = OrderedDict((k, v) for k, v in state.items() if not k.startswith("AuxLogits."))
    if len(kept) < len(state):
        logger.info("ignoring %d AuxLogits tensors (auxiliary classifier)", len(state) - len(kept))
    return _with_metadata(kept, state)
