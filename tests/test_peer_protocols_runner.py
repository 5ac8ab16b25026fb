"""The runner resolves ``--classes`` by name or id (``odbench.protocols.resolve_class``)."""

from __future__ import annotations

import pytest

from odbench.engine.plan import expand
from odbench.protocols import ProtocolError


def test_expand_accepts_class_ids_for_named_classes(registry) -> None:
    plan = expand(registry, ["ocsvm"], ["fashion_mnist"], classes=["0", "Trouser"])
    assert sorted({job.normal_class for job in plan.jobs}) == ["T-shirt/top", "Trouser"]  # names in the store
    with pytest.raises(ProtocolError, match=r"unknown class '12' for dataset 'fashion_mnist'.*\(or an id 0-9\)"):
        expand(registry, ["ocsvm"], ["fashion_mnist"], classes=["12"])
