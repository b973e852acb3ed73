"""Print the figures of the real control plane the API tests run on (tests/controlplane).

    python -m benchmarks.control_plane            # warm reuse and start-up, 5 starts
    python -m benchmarks.control_plane --cold     # also a cold build: empty Go caches, modules
                                                  # from the proxy (minutes, and ~4 GB of disk)

Cold builds into temporary Go caches and a temporary binary folder, so the project's own are
left as they are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from controlplane import binaries
from controlplane.plane import ControlPlane


def cold_build() -> float:
    with tempfile.TemporaryDirectory(prefix="go-cold-") as scratch:
        os.environ["GOCACHE"] = f"{scratch}/cache"
        os.environ["GOMODCACHE"] = f"{scratch}/mod"
        started = time.monotonic()
        for module in binaries.MODULES:
            names = [name for name in module.commands if name in binaries.CONTROL_PLANE]
            binaries.build(module, names, Path(scratch) / "bin")
        elapsed = time.monotonic() - started
        # The module cache is read-only by design; make it removable.
        os.system(f"chmod -R u+w {scratch}")
        del os.environ["GOCACHE"], os.environ["GOMODCACHE"]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cold", action="store_true", help="also time a build with empty Go caches")
    parser.add_argument("--starts", type=int, default=5)
    options = parser.parse_args()

    print(
        f"Kubernetes {binaries.KUBERNETES.version()}, etcd {binaries.ETCD.version()}; {binaries.go_version()}"
    )
    if options.cold:
        print(f"cold build, all 5 binaries:  {cold_build():.0f} s")
    binaries.ensure()
    started = time.monotonic()
    binaries.ensure()
    print(f"warm reuse (all present):    {time.monotonic() - started:.2f} s")
    startups = []
    for _ in range(options.starts):
        with tempfile.TemporaryDirectory(prefix="control-plane-") as root:
            plane = ControlPlane(Path(root))
            try:
                plane.start()
                startups.append(plane.startup_seconds)
            finally:
                plane.stop()
    print(
        f"start-up to controllers ready: median {statistics.median(startups):.1f} s, "
        f"min {min(startups):.1f} s, max {max(startups):.1f} s over {len(startups)} starts"
    )


if __name__ == "__main__":
    main()
