"""The hashed locks agree: a package pinned in two of them is pinned to the same version.

The Airflow image, the deployer image and the nox sessions each install from their own lock;
the lint gate runs Airflow's code in all three, so a lock regenerated after an Airflow bump
without the others would lint with one Airflow and deploy another.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT

LOCKS = ("docker/requirements.lock", "docker/deployer/requirements.lock", "requirements/dev.lock")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def pins(text: str) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in PIN.findall(text)}


def test_pins_are_read_from_a_lock():
    lock = "apache_airflow==3.3.2 \\\n    --hash=sha256:00\nrich==13.9.4 ; python_version >= '3.8'\n"
    assert pins(lock) == {
        "apache-airflow": "3.3.2",
        "rich": "13.9.4",
    }


@pytest.mark.parametrize(("first", "second"), list(combinations(LOCKS, 2)))
def test_shared_packages_have_the_same_version(first: str, second: str):
    a, b = (pins((REPO_ROOT / Path(lock)).read_text()) for lock in (first, second))
    assert a and b, "a lock with no pins"
    differ = {name: (a[name], b[name]) for name in a.keys() & b.keys() if a[name] != b[name]}
    assert not differ, f"{first} and {second} pin different versions: {differ}"
