"""testbed.lab.backends: every registry entry builds a lab with the shared lifecycle; the auto
choice reads the registry; a bad name is refused with the choices; clean() composes backends."""

from __future__ import annotations

import pytest

from testbed.lab import backends, names
from testbed.lab.base import LabBase, LabSetup
from testbed.lab.plan import LabPlan, LinkShape


class _Caps:
    def __init__(self, **have: bool) -> None:
        self.have = have

    def has(self, name: str) -> bool:
        return self.have.get(name, False)

    def get(self, name: str):
        return self.have.get(name)


def test_every_backend_builds_a_lab_with_the_shared_lifecycle(tmp_path) -> None:
    plan = LabPlan.star(LinkShape(rate_mbit=10))
    for name, backend in backends.BACKENDS.items():
        lab = backend.make_lab(plan, LabSetup(run_dir=tmp_path, capabilities=_Caps()))
        assert isinstance(lab, LabBase), name
        assert lab.state is None and lab.run_id == plan.run_id
        assert lab.address("md") == "198.18.1.2"
        lab.down()  # never up: a no-op, nothing of the run id is touched


def test_a_backend_name_not_in_the_registry_is_refused() -> None:
    with pytest.raises(ValueError,
                       match=r"auto or one of \['namespace', 'ns3', 'vm'\], got 'mininet'"):
        backends.choose("mininet", _Caps(netem=True))


@pytest.mark.root
def test_clean_of_a_run_that_left_nothing_removes_nothing(needs_root) -> None:
    run_id = names.new_run_id()
    assert backends.clean(dry_run=True, run_id=run_id) == []
    assert backends.clean(run_id=run_id) == []
