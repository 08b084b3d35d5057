"""Models: the catalog (plain data), teachers, students and the split entry point.

``catalog`` imports without torch, and so does this package: the other names below are loaded
on first use, so that validating a scenario never pays for importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.models.split import SIDES, SplitModel, build_split
    from testbed.models.students import (
        StudentHead,
        StudentModel,
        build_student,
        build_student_head,
        split_student,
        teacher_head,
    )
    from testbed.models.teachers import (
        CheckpointError,
        SplitPointInfo,
        WeightsInfo,
        build_teacher,
        describe_splits,
        output_shape,
        split_teacher,
    )

_EXPORTS = {
    "SIDES": "split",
    "SplitModel": "split",
    "build_split": "split",
    "StudentHead": "students",
    "StudentModel": "students",
    "build_student": "students",
    "build_student_head": "students",
    "split_student": "students",
    "teacher_head": "students",
    "CheckpointError": "teachers",
    "SplitPointInfo": "teachers",
    "WeightsInfo": "teachers",
    "build_teacher": "teachers",
    "describe_splits": "teachers",
    "output_shape": "teachers",
    "split_teacher": "teachers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
