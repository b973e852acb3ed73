"""The hashed locks: they agree with each other, and each installs exactly as it is.

The Airflow image, the deployer image and the nox sessions each install from their own lock;
the lint gate runs Airflow's code in all three, so a lock regenerated after an Airflow bump
without the others would lint with one Airflow and deploy another.

Installs run real pip and uv (airflow_ha/locks.py, as every install site does) against a
PEP 503 index served on loopback, holding wheels built here: the locked ones, plus a newer
release that the lock reaches only through an extra, as when uvicorn 0.55 came out after a
lock that pinned 0.54 through `uvicorn[standard]`. Nothing leaves the machine.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations
from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT, locks, tools

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


# The failure class: a lock that pins `server==1.0`, reached only through `app`'s
# `server[standard]`, while the index serves a newer `server` released after the lock.
PACKAGES = {
    ("app", "1.0"): ["server[standard]>=0.1"],
    ("server", "1.0"): ['speedups ; extra == "standard"'],
    ("speedups", "1.0"): [],
    ("server", "2.0"): ['speedups ; extra == "standard"'],
}
LOCKED = (("app", "1.0"), ("server", "1.0"), ("speedups", "1.0"))


WHEEL = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
VERSIONS = (
    "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
)


def build_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal pure-Python wheel: a package, its METADATA and a RECORD."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    extras = sorted({req.split('extra == "')[1].rstrip('"') for req in requires if "extra ==" in req})
    metadata += [f"Provides-Extra: {extra}" for extra in extras]
    metadata += [f"Requires-Dist: {req}" for req in requires]
    files = {
        f"{name}/__init__.py": "",
        f"{dist_info}/METADATA": "\n".join(metadata) + "\n",
        f"{dist_info}/WHEEL": WHEEL,
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A PEP 503 index on loopback, and each locked wheel's hash-pinned lock line."""
    root = tmp_path_factory.mktemp("index")
    lines = {}
    for (name, version), requires in PACKAGES.items():
        project = root / "simple" / name
        project.mkdir(parents=True, exist_ok=True)
        wheel = build_wheel(project, name, version, requires)
        if (name, version) in LOCKED:
            lines[name] = (
                f"{name}=={version} \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
            )
    for project in (root / "simple").iterdir():
        links = "".join(
            f'<a href="{wheel.name}">{wheel.name}</a>\n' for wheel in sorted(project.glob("*.whl"))
        )
        (project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/", lines
    server.shutdown()
    thread.join()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=["pip", "uv"])
def installer(request, index, tmp_path, monkeypatch) -> tuple[Path, str | None]:
    """A new environment's python, and uv where uv installs; both see only the loopback index."""
    url, _ = index
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("UV_NO_CONFIG", "1")
    monkeypatch.setenv("UV_INDEX_URL", url)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    uv = None
    if request.param == "uv":
        uv = tools.find_uv()
        assert uv, "uv is neither on PATH nor in .cache/bootstrap: run the README's test command"
    return env / "bin" / "python", uv


def installed(python: Path) -> dict[str, str]:
    found = json.loads(subprocess.run([str(python), "-c", VERSIONS], capture_output=True, check=True).stdout)
    return {name: version for name, version in found.items() if name in dict(LOCKED)}


def test_a_newer_release_behind_an_extra_leaves_the_install_exactly_as_locked(installer, index, tmp_path):
    python, uv = installer
    lock = tmp_path / "requirements.lock"
    lock.write_text("\n".join(index[1].values()) + "\n")

    locks.install(python, [lock], uv=uv)

    assert installed(python) == dict(LOCKED)


@pytest.mark.parametrize(
    ("left_out", "named"),
    [
        ("speedups", "server 1.0 [standard] requires speedups, which is not installed"),
        ("server", "app 1.0 requires server[standard]>=0.1, which is not installed"),
    ],
)
def test_a_lock_that_lacks_a_package_fails_naming_it(installer, index, tmp_path, left_out, named):
    python, uv = installer
    lock = tmp_path / "requirements.lock"
    lock.write_text("\n".join(line for name, line in index[1].items() if name != left_out) + "\n")

    with pytest.raises(locks.LockError) as refused:
        locks.install(python, [lock], uv=uv)

    assert str(refused.value).startswith(f"{lock} is incomplete")
    assert named in str(refused.value)


def test_every_hashed_install_goes_through_locks_py():
    """The Dockerfiles, bootstrap, the tool environments and nox: one way to install a lock."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*Dockerfile", "*.yml", ".ci/run"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    bypassing = [
        path
        for path in tracked
        if path not in ("airflow_ha/locks.py", "tests/test_locks.py")
        and re.search(
            r"--require-hashes|--requirement[= ]|pip install[^\n]*-r ", (REPO_ROOT / path).read_text()
        )
    ]
    assert not bypassing, f"these install a lock without airflow_ha/locks.py: {bypassing}"
    for dockerfile in ("docker/Dockerfile", "docker/deployer/Dockerfile"):
        assert "/tmp/build/locks.py install" in (REPO_ROOT / dockerfile).read_text()


@pytest.mark.parametrize(
    "lock",
    [*LOCKS, "requirements/bootstrap.lock", "requirements/checkov.lock"],
)
def test_each_lock_is_regenerated_by_the_one_hashing_command_its_input_documents(lock: str):
    """uv writes the command into the lock's header; the input file must give the same one."""
    header = (REPO_ROOT / lock).read_text().splitlines()[1]
    command = header.lstrip("# ").strip()
    assert command.startswith("uv pip compile "), f"{lock} was not made by uv pip compile: {header}"
    assert "--generate-hashes" in command.split(), f"{lock}'s command hashes nothing: {command}"
    assert command.endswith(f"-o {lock}"), f"{lock}'s command writes another file: {command}"
    source = next(word for word in command.split()[3:] if word.endswith(".in"))
    documented = " ".join(
        line.lstrip("#").strip().rstrip("\\").strip()
        for line in (REPO_ROOT / source).read_text().splitlines()
        if line.startswith("#")
    )
    assert command in " ".join(documented.split()), f"{source} does not document `{command}`"
