"""The rehearsal holds a container to its manifest's memory limit, as a kubelet's cgroup does.

Real Docker and the real Airflow image; no Kubernetes API is involved. This is what lets
`nox -s stack` fail on a limit set too low, and what its diagnosis reads to name the container.
"""

from __future__ import annotations

import pytest

from airflow_ha.manifests import Manifest

from .rehearsal import OOM_KILLED, Rehearsal, RehearsalError

LIMIT = "96Mi"
ALLOCATE = "x = bytearray(300 * 1024 * 1024)"  # well over the limit


def deployment(image: str) -> Manifest:
    container = {
        "name": "hungry",
        "image": image,
        "command": ["sleep", "120"],
        "resources": {"limits": {"memory": LIMIT}},
    }
    spec = {
        "replicas": 1,
        "template": {"metadata": {"labels": {"app": "hungry"}}, "spec": {"containers": [container]}},
    }
    return Manifest(
        "test", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hungry"}, "spec": spec}
    )


def test_a_process_over_the_memory_limit_is_killed_and_the_diagnosis_names_its_container(
    airflow_image: str,
) -> None:
    manifest = deployment(airflow_image)
    with Rehearsal([manifest], {}) as rehearsal:
        (pod,) = rehearsal.start(manifest)
        runner = pod.containers[-1]
        assert runner.attrs["HostConfig"]["Memory"] == 96 * 1024 * 1024
        assert rehearsal.memory_limit_hits() == [], "nothing reached the limit yet"

        result = runner.exec_run(["python", "-c", ALLOCATE])

        assert result.exit_code == 137, result.output.decode(errors="replace")  # SIGKILL by the OOM killer
        assert rehearsal.memory_limit_hits() == [f"{runner.name}: the OOM killer ended 1 of its processes"]


def test_a_main_process_killed_for_memory_says_so(airflow_image: str) -> None:
    manifest = deployment(airflow_image)
    manifest.obj["spec"]["template"]["spec"]["containers"][0]["command"] = ["python", "-c", ALLOCATE]
    with Rehearsal([manifest], {}) as rehearsal:
        (pod,) = rehearsal.start(manifest)
        pod.containers[-1].wait(timeout=60)
        with pytest.raises(RehearsalError, match=OOM_KILLED):
            rehearsal.require_running(pod)
