"""Every rule of the lint gate is pinned by a fixture: a broken copy of the repository that
triggers it, one per message where a rule has branches; a near miss must not trigger it. A
rule without a fixture, or a fixture of no rule, fails here; so does a fixture whose rule no
longer fires, and the real repository if it triggers any rule.

Nothing is faked: kustomize, yamale, kubernetes-validate, Airflow and checkov run for real,
on a temporary copy of what `invoke lint` reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT
from airflow_ha.lint import gate, registry
from airflow_ha.lint.render import render_target

from .repo import Fixture, copy_repository, fixtures, kubernetes_versions

FIXTURES = fixtures()


def test_every_rule_has_a_fixture() -> None:
    pinned = {fixture.rule for fixture in FIXTURES if not fixture.passes}
    unpinned = sorted(set(registry.rules()) - pinned)
    assert not unpinned, f"rules without a fixture under tests/lint/fixtures/: {unpinned}"


def test_every_fixture_pins_a_registered_rule_of_its_folder() -> None:
    rules = registry.rules()
    for fixture in FIXTURES:
        assert fixture.rule in rules, f"{fixture.path}: {fixture.rule} is no registered rule"
        folder = fixture.path.parent.name
        assert folder == fixture.check, f"{fixture.path}: belongs in fixtures/{fixture.check}/"
        slug = fixture.rule.split("/", 1)[1]
        assert fixture.path.stem.startswith(slug), f"{fixture.path}: its name starts with {slug}"


def test_rule_ids_name_their_check() -> None:
    for check in registry.CHECKS:
        for rule, line in check.RULES.items():
            assert rule.startswith(f"{check.NAME}/"), f"{rule} is not a rule of {check.NAME}"
            assert line and "\n" not in line, f"{rule} needs one line saying what it catches"


def test_the_repository_triggers_no_rule() -> None:
    report = gate.check(root=REPO_ROOT, kubernetes_versions=kubernetes_versions(REPO_ROOT))

    assert [problem for problem, _ in report.problems] == []
    assert set(report.seconds) == set(registry.names())


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda fixture: fixture.id)
def test_fixture_triggers_its_rule(fixture: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_repository(tmp_path)
    fixture.apply(root)
    check = next(check for check in registry.CHECKS if fixture.check == check.NAME)
    target = render_target(root, None, kubernetes_versions(root))
    for name, value in fixture.env.items():
        monkeypatch.setenv(name, value)

    found = list(check.run(target))

    strays = [problem for problem in found if problem.rule not in check.RULES]
    assert not strays, f"problems with a rule {check.NAME} does not declare: {strays}"
    if fixture.passes:
        fired = [problem for problem in found if problem.rule == fixture.rule]
        assert not fired, f"{fixture.path.name} is one field short of {fixture.rule}, which fired: {fired}"
        return
    expect = fixture.expect
    matching = [
        problem
        for problem in found
        if problem.rule == fixture.rule
        and problem.file == expect["file"]
        and problem.resource == expect.get("resource", "")
        and problem.field.startswith(expect.get("field", ""))
        and expect.get("message", "") in problem.message
    ]
    assert matching, f"no {fixture.rule} problem as {fixture.path.name} expects; found: {found}"
