"""Teachers, students and splitting agree with the catalog and with the paper's Tables 6-8."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from testbed.configs import Configuration
from testbed.models import catalog
from testbed.models.split import build_split
from testbed.models.students import (
    REPLACED_UNTIL,
    StudentModel,
    build_student,
    build_student_head,
    split_student,
    teacher_head,
)
from testbed.models.teachers import (
    CheckpointError,
    build_teacher,
    load_checked,
    output_shape,
    describe_splits,
    split_teacher,
    stage_names,
    torchvision_weights_path,
)

torch.set_num_threads(1)  # robust on a shared 2-core machine (no OpenMP oversubscription)

SMALL = ("mobilenet_v2", "mnasnet0_5", "mnasnet1_0")
N_CHS = (*catalog.BOTTLENECK_CHANNELS, None)
BOTTLENECK_SIZE = {"densenet169": 29, "densenet201": 29, "resnet152": 29, "inception_v3": 37}


def input_shape(name: str) -> tuple[int, int, int]:
    size = catalog.MODELS[name].input_size
    return (3, size, size)


def image(name: str, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, *input_shape(name)), generator=generator)


@pytest.fixture(scope="module")
def teacher() -> Callable[[str], nn.Module]:
    """Each teacher built once per module (random weights, seed 0)."""
    built: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            built[name], info = build_teacher(name, use_cache=False)
            assert info.source == "random"
        return built[name]

    return get


# --------------------------------------------------------------------------------------------
# Teachers


@pytest.mark.parametrize("name", list(catalog.MODELS))
def test_every_catalog_split_point_exists_in_the_built_teacher(name, teacher):
    model = teacher(name)
    assert not model.training
    names = stage_names(model)
    for point in catalog.MODELS[name].split_points:
        assert point in names
        qualified = f"features.{point}" if name.startswith("densenet") else point
        model.get_submodule(qualified)  # raises if torchvision has no such module


@pytest.mark.parametrize("name", list(catalog.MODELS))
def test_teacher_split_reproduces_the_forward_pass(name, teacher):
    model = teacher(name)
    points = catalog.MODELS[name].split_points
    if name not in SMALL:  # heavy models: one early and one late split point
        points = (points[1], points[-1])
    x = image(name)
    with torch.inference_mode():
        expected = model(x)
        for point in points:
            head, tail = split_teacher(model, point)
            assert torch.allclose(tail(head(x)), expected, rtol=1e-4, atol=1e-5), point


def test_split_head_keeps_torchvision_state_dict_keys(teacher):
    model = teacher("densenet201")
    head, tail = split_teacher(model, "transition1")
    keys = set(model.state_dict())
    assert set(head.state_dict()) | set(tail.state_dict()) == keys
    assert "features.conv0.weight" in head.state_dict()
    assert "classifier.weight" in tail.state_dict()


def test_inception_split_applies_transform_input_in_the_head(teacher):
    model = teacher("inception_v3")
    x = image("inception_v3")
    model.transform_input = True
    try:
        with torch.inference_mode():
            expected = model(x)
            head, tail = split_teacher(model, "maxpool2")
            assert "transform_input" in dict(head.named_children())
            assert torch.allclose(tail(head(x)), expected, rtol=1e-4, atol=1e-5)
    finally:
        model.transform_input = False


def test_unknown_teacher_split_point_is_rejected(teacher):
    with pytest.raises(ValueError, match="unknown split point"):
        split_teacher(teacher("mnasnet0_5"), "layers.99")


def test_describe_splits_densenet201():
    table = {row.name: row for row in describe_splits("densenet201")}
    assert tuple(table) == catalog.MODELS["densenet201"].split_points
    assert table["transition1"].shape == (128, 28, 28)
    assert table["transition1"].elements == 128 * 28 * 28
    assert table["transition1"].relative == pytest.approx(128 * 28 * 28 / (3 * 224 * 224))
    assert table["pool0"].shape == (64, 56, 56)


@pytest.mark.parametrize("name", list(catalog.MODELS))
def test_describe_splits_covers_the_catalog(name):
    table = describe_splits(name)
    assert tuple(row.name for row in table) == catalog.MODELS[name].split_points
    assert all(row.elements > 0 and row.relative > 0 for row in table)


def test_inception_table_matches_torchvision_comments():
    table = {row.name: row.shape for row in describe_splits("inception_v3")}
    assert table["maxpool1"] == (64, 73, 73)
    assert table["maxpool2"] == (192, 35, 35)
    assert table["Mixed_6e"] == (768, 17, 17)
    assert table["Mixed_7b"] == (2048, 8, 8)


def test_teacher_checkpoint_round_trip_and_mismatch(tmp_path, teacher):
    model = teacher("mnasnet0_5")
    path = tmp_path / "mnasnet.pt"
    torch.save(model.state_dict(), path)
    loaded, info = build_teacher("mnasnet0_5", checkpoint=path, seed=7)
    assert info.source == "checkpoint" and info.path == str(path) and len(info.sha256) == 64
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(CheckpointError, match="mobilenet_v2 teacher"):
        build_teacher("mobilenet_v2", checkpoint=path)


def test_torchvision_weights_are_used_only_from_the_local_cache(tmp_path, monkeypatch, teacher):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    _, info = build_teacher("mnasnet0_5", seed=3)
    assert info.source == "random" and info.path is None
    cached = torchvision_weights_path("mnasnet0_5")
    assert cached.parent == tmp_path / "checkpoints"
    assert cached.name == "mnasnet0.5_top1_67.823-3ffadce67e.pth"
    cached.parent.mkdir()
    torch.save(teacher("mnasnet0_5").state_dict(), cached)
    loaded, info = build_teacher("mnasnet0_5", seed=3)
    assert info.source == "torchvision-local" and info.path == str(cached)
    expected = teacher("mnasnet0_5").state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    _, info = build_teacher("mnasnet0_5", seed=3, use_cache=False)
    assert info.source == "random"


def test_old_densenet_and_inception_aux_keys_are_adapted():
    from testbed.models.teachers import _drop_aux_logits, _rename_old_densenet_keys

    t = torch.zeros(1)
    renamed = _rename_old_densenet_keys({"features.denseblock1.denselayer1.norm.1.weight": t})
    assert list(renamed) == ["features.denseblock1.denselayer1.norm1.weight"]
    assert list(_drop_aux_logits({"AuxLogits.fc.weight": t, "fc.weight": t})) == ["fc.weight"]


def test_same_seed_gives_same_weights_and_other_seed_does_not():
    a, _ = build_teacher("mnasnet0_5", seed=5, use_cache=False)
    b, _ = build_teacher("mnasnet0_5", seed=5, use_cache=False)
    c, _ = build_teacher("mnasnet0_5", seed=6, use_cache=False)
    weight = "layers.0.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


# --------------------------------------------------------------------------------------------
# Students


@pytest.mark.parametrize("n_ch", N_CHS)
@pytest.mark.parametrize("name", catalog.students())
def test_student_head_output_matches_teacher_head(name, n_ch, teacher):
    expected = output_shape(teacher_head(name, teacher(name)), input_shape(name))
    head = build_student_head(name, n_ch)
    assert output_shape(head, input_shape(name)) == expected
    bottleneck = nn.Sequential(head.stem, head.bottleneck)
    size = BOTTLENECK_SIZE[name]
    channels = catalog.NO_BOTTLENECK_CHANNELS if n_ch is None else n_ch
    assert output_shape(bottleneck, input_shape(name)) == (channels, size, size)


def test_teacher_heads_end_where_the_paper_says(teacher):
    shapes = {
        name: output_shape(teacher_head(name, teacher(name)), input_shape(name))
        for name in catalog.students()
    }
    assert shapes == {
        "densenet169": (256, 14, 14),
        "densenet201": (256, 14, 14),
        "resnet152": (512, 28, 28),
        "inception_v3": (192, 35, 35),
    }


def test_bottleneck_payload_sizes():
    payloads = {"densenet201": 10_092, "resnet152": 10_092, "inception_v3": 12 * 37 * 37}
    for name, elements in payloads.items():
        head = build_student_head(name, 12)
        shape = output_shape(nn.Sequential(head.stem, head.bottleneck), input_shape(name))
        assert torch.Size(shape).numel() == elements


def test_student_heads_are_bias_free_convolutions():
    for name in catalog.students():
        convs = [m for m in build_student_head(name, 12).modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(c.bias is None for c in convs)
        assert convs[1].kernel_size == (2, 2) and convs[1].stride == (2, 2)


@pytest.mark.parametrize("name", catalog.students())
def test_student_split_reproduces_the_student(name, teacher):
    _, tail = split_teacher(teacher(name), REPLACED_UNTIL[name])
    student = StudentModel(name, 12, build_student_head(name, 12), tail).eval()
    x = image(name)
    with torch.inference_mode():
        expected = student(x)
        assert expected.shape == (1, 1000)
        for point in catalog.STUDENT_SPLIT_POINTS:
            head, rest = split_student(student, point)
            sent = head(x)
            assert torch.allclose(rest(sent), expected, rtol=1e-4, atol=1e-5), point
            if point == "bottleneck":
                assert sent.shape[1:] == (12, BOTTLENECK_SIZE[name], BOTTLENECK_SIZE[name])


def test_student_checkpoint_round_trip_and_clear_errors(tmp_path):
    student, info = build_student("densenet169", n_ch=3, seed=1)
    assert info.source == "random"
    path = tmp_path / "student.pt"
    torch.save(student.state_dict(), path)

    loaded, info = build_student("densenet169", n_ch=3, checkpoint=path, seed=2)
    assert info.source == "checkpoint" and info.sha256 is not None
    expected = student.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())

    other = StudentModel("densenet169", 6, build_student_head("densenet169", 6), student.tail)
    mismatch = r"N_ch=6.*shape mismatches \[head.bottleneck.2.weight \[3, 64, 2, 2\] \(model \[6,"
    with pytest.raises(CheckpointError, match=mismatch):
        load_checked(other, expected, what="densenet169 student (N_ch=6)", origin=str(path))

    wrong = dict(expected)
    wrong["head.extra.weight"] = wrong.pop("head.decoder.0.weight")
    with pytest.raises(CheckpointError) as error:
        load_checked(student, wrong, what="densenet169 student", origin=str(path))
    message = str(error.value)
    assert "missing keys [head.decoder.0.weight]" in message
    assert "unexpected keys [head.extra.weight]" in message

    not_a_state_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_state_dict)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        build_student("densenet169", n_ch=3, checkpoint=not_a_state_dict)


def test_student_without_a_student_head_is_rejected():
    with pytest.raises(ValueError, match="no student head"):
        build_student_head("mobilenet_v2", 12)


# --------------------------------------------------------------------------------------------
# build_split


@pytest.mark.parametrize(
    "mode, split, md, es",
    [("LC", None, "model", None), ("EC", None, None, "model"), ("SC", 2, "head", "tail")],
)
def test_build_split_gives_each_side_its_part(mode, split, md, es):
    config = Configuration("c", mode, "mnasnet0_5", split=split)
    both = build_split(config, "both")
    md_side = build_split(config, "md")
    es_side = build_split(config, "es")
    assert (both.head is None, both.tail is None) == (md is None, es is None)
    assert md_side.tail is None and (md_side.head is None) == (md is None)
    assert es_side.head is None and (es_side.tail is None) == (es is None)
    assert both.input_size == 224 and both.weights.source in ("random", "torchvision-local")
    for part in (both.head, both.tail):
        if part is not None:
            assert not part.training
            assert not any(p.requires_grad for p in part.parameters())
    if mode == "SC":
        assert both.config.split == "layers.9"
        assert both.head_output_shape == (24, 28, 28)
    else:
        assert both.head_output_shape is None


def test_md_head_and_es_tail_built_apart_form_the_whole_model():
    whole = build_split(Configuration("lc", "LC", "mnasnet0_5"), "md").head
    config = Configuration("sc", "SC", "mnasnet0_5", split="layers.12")
    head = build_split(config, "md").head
    tail = build_split(config, "es").tail
    x = image("mnasnet0_5")
    with torch.inference_mode():
        assert torch.allclose(tail(head(x)), whole(x), rtol=1e-4, atol=1e-5)


def test_build_split_student_sides():
    config = Configuration("mb", "SC", "densenet169", kind="student", split="bottleneck", n_ch=12)
    md = build_split(config, "md")
    es = build_split(config, "es")
    assert md.tail is None and es.head is None
    assert md.head_output_shape == es.head_output_shape == (12, 29, 29)
    x = image("densenet169")
    with torch.inference_mode():
        assert es.tail(md.head(x)).shape == (1, 1000)
    wide = build_split(Configuration("m2", "SC", "densenet169", kind="student", split=2), "md")
    assert wide.config.split == "bottleneck"
    assert wide.head_output_shape == (catalog.NO_BOTTLENECK_CHANNELS, 29, 29)


def test_build_split_rejects_bad_input():
    with pytest.raises(ValueError, match="side"):
        build_split(Configuration("c", "LC", "mnasnet0_5"), "phone")
    with pytest.raises(ValueError, match="split"):
        build_split(Configuration("c", "SC", "mnasnet0_5", split="nowhere"))


def test_nothing_is_built_for_a_side_with_nothing_to_run():
    built = build_split(Configuration("c", "LC", "resnet152"), "es")
    assert built.head is None and built.tail is None
    assert built.input_shape == (3, 224, 224)


def test_catalog_and_configs_import_without_torch():
    code = (
        "import sys, testbed.configs, testbed.models; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
