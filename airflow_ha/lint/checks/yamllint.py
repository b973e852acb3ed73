"""Every YAML file of the repository passes yamllint with the repository's .yamllint, warnings included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from yamllint import linter
from yamllint.config import YamlLintConfig

from .. import cache
from ..problems import Problem
from ..render import Target, relative

NAME = "yamllint"
RULES = {
    "yamllint/syntax": "a YAML file that does not parse",
    "yamllint/style": "a yamllint rule of .yamllint broken (indentation, trailing spaces, ...)",
}


def run(target: Target) -> Iterator[Problem]:
    config_file = target.root / ".yamllint"
    config = (
        YamlLintConfig(file=str(config_file)) if config_file.is_file() else YamlLintConfig("extends: default")
    )
    paths = list(yaml_files(target.root, config))
    # Every file it lints, and the config, by content: another file or another line is another key.
    key = cache.digest(
        str(target.root),
        cache.files(target.root, [".yamllint", *(str(path.relative_to(target.root)) for path in paths)]),
        cache.package_versions("yamllint"),
        cache.gate_code(),
    )
    return iter(cache.cached(NAME, key, lambda: _lint(target.root, config, paths)))


def _lint(root: Path, config: YamlLintConfig, paths: list[Path]) -> Iterator[Problem]:
    for path in paths:
        name = relative(root, path)
        for found in linter.run(path.read_text(), config, name):
            if found.rule:
                yield Problem("yamllint/style", name, f"{found.desc} ({found.rule})", line=found.line)
            else:
                yield Problem("yamllint/syntax", name, found.desc, line=found.line)


def yaml_files(root: Path, config: YamlLintConfig) -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(root):
        relative_dir = Path(directory).relative_to(root)
        # Caches, virtual environments and .git hold no YAML of the project's own.
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not (name.startswith(".") and name != ".github")
            and not config.is_file_ignored(f"{relative_dir / name}/")
        )
        for name in sorted(files):
            path = relative_dir / name
            if config.is_yaml_file(str(path)) and not config.is_file_ignored(str(path)):
                yield root / path
