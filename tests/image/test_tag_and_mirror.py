"""The image tag scheme, and `invoke base-image`'s apt sources parser and preconditions (no Docker needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT, image
from airflow_ha.console import Failure


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@invalid"]
    return subprocess.run(
        ["git", *identity, "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout


def test_tag_is_version_and_revision_then_dirty(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")
    (tmp_path / "dag.py").write_text("one\n")
    git(tmp_path, "add", "dag.py")
    git(tmp_path, "commit", "--quiet", "-m", "first")
    revision = git(tmp_path, "rev-parse", "--short", "HEAD").strip()
    assert image.image_tag("3.3.2", root=tmp_path) == f"3.3.2-{revision}"

    (tmp_path / "dag.py").write_text("two\n")
    edited = image.image_tag("3.3.2", root=tmp_path)
    assert edited.startswith(f"3.3.2-{revision}.") and edited.endswith("-dirty"), edited

    # Another uncommitted change is another image: a redeploy must roll the pods.
    (tmp_path / "new_dag.py").write_text("three\n")
    added = image.image_tag("3.3.2", root=tmp_path)
    assert added.startswith(f"3.3.2-{revision}.") and added != edited, (added, edited)
    assert image.image_tag("3.3.2", root=tmp_path) == added


def test_tag_of_this_repository_names_its_revision() -> None:
    revision = git(REPO_ROOT, "rev-parse", "--short", "HEAD").strip()
    assert image.image_tag("3.3.2").startswith(f"3.3.2-{revision}")


def test_tag_outside_a_git_clone_asks_for_a_tag(tmp_path: Path) -> None:
    with pytest.raises(Failure, match="--tag"):
        image.image_tag("3.3.2", root=tmp_path)


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://source.invalid/debian bookworm main\n"
        "deb http://security.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/etc/debian.gpg] http://main.invalid/debian/ bookworm main\n"
    )
    assert image.apt_mirror(sources, tmp_path / "sources.list.d") == "http://main.invalid/debian"


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://disabled.invalid/debian\n"
        "Suites: bookworm\n"
        "Enabled: no\n"
        "\n"
        "Types: deb deb-src\n"
        "# a comment inside the stanza\n"
        "URIs: http://main.invalid/debian\n"
        "  http://second.invalid/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://security.invalid/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert (
        image.apt_mirror(tmp_path / "sources.list", tmp_path / "sources.list.d")
        == "http://main.invalid/debian"
    )


def test_no_mirror_in_the_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb http://security.invalid/debian-security bookworm-security main\n"
    )
    assert image.apt_mirror(tmp_path / "sources.list", tmp_path / "sources.list.d") is None


def invoke_base_image(
    env: dict[str, str] | None = None, as_user: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "invoke", "base-image", "--name", "airflow-ha-test-never:built"]
    if as_user and os.geteuid() == 0:
        # A new user namespace without mappings: the same files, but not root any more.
        command = ["unshare", "--user", *command]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_base_image_without_debootstrap_says_how_to_install_it(tmp_path: Path) -> None:
    ran = invoke_base_image(env={"PATH": str(tmp_path)})
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert ran.stderr.startswith("error: debootstrap is not installed: `sudo apt-get install debootstrap`")


def test_base_image_as_a_user_asks_for_root() -> None:
    ran = invoke_base_image(as_user=True)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert ran.stderr.startswith("error: debootstrap needs root"), ran.stderr
