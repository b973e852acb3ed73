"""Image figures: size, cold build time from a present base, rebuild time after a DAG edit.

    python -m benchmarks.image [--base-image airflow-ha-base:bookworm] [--runs 3]   # from the repository root

Builds go through the same code as `invoke build`, from a copy of the build context,
so that the DAG edits never touch the working tree. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from airflow_ha import REPO_ROOT, image

REFERENCE = "airflow-ha:benchmark"
DAG = "dags/smoke_kubernetes_executor.py"


def copy_context(destination: Path) -> None:
    """The Dockerfile and what .dockerignore lets into the context (its `!` lines), copied;
    nothing else matters to the build."""
    shutil.copy2(REPO_ROOT / ".dockerignore", destination)
    (destination / "docker").mkdir()
    shutil.copy2(REPO_ROOT / "docker" / "Dockerfile", destination / "docker")
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        if not line.startswith("!"):
            continue
        source, target = REPO_ROOT / line[1:], destination / line[1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-image", default="airflow-ha-base:bookworm")
    parser.add_argument("--runs", type=int, default=3, help="DAG-edit rebuilds to take the median of")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="airflow-ha-benchmark-") as folder:
        root = Path(folder)
        copy_context(root)
        cold = image.build_image(REFERENCE, arguments.base_image, no_cache=True, root=root)
        rebuilds = []
        for run in range(arguments.runs):
            with (root / DAG).open("a") as dag:
                dag.write(f"# benchmark edit {run}\n")
            rebuilds.append(image.build_image(REFERENCE, arguments.base_image, root=root).seconds)

    size = image.docker_client().images.get(REFERENCE).attrs["Size"]
    print(f"base image:                {arguments.base_image}")
    print(f"image size (uncompressed): {size / 1e6:.0f} MB")
    print(f"cold build (--no-cache):   {cold.seconds:.0f} s")
    runs = ", ".join(f"{seconds:.1f}" for seconds in rebuilds)
    print(f"rebuild after a DAG edit:  {statistics.median(rebuilds):.1f} s median ({runs})")


if __name__ == "__main__":
    main()
