"""Every installed plugin passes the conformance kit plugin authors use."""

from __future__ import annotations

import pytest

from harness.host import get_host
from harness.testing import check_plugin

INFOS = get_host().infos()


@pytest.mark.parametrize("kind, name", [(i.kind, i.name) for i in INFOS], ids=[f"{i.kind}-{i.name}" for i in INFOS])
def test_plugin_conforms(kind, name):
    check_plugin(kind, name)


def test_builtins_are_all_checked():
    names = {i.name for i in INFOS}
    assert {"exact", "none", "dot_products"} <= names
