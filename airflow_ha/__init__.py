"""Build, lint, deploy and smoke-test highly available Airflow 3 on Kubernetes.

tasks.py parses arguments; each module here owns one responsibility:
image, manifests (with the workload model), lint (the lint gate, a package), generated_secrets,
cluster, tools, capacity, kubeapi, rollout, cluster_secrets, deploy, dag_run, worker_pods,
port_forward, smoke, bootstrap and locks.
"""

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _installed_without_bytecode() -> bool:
    spec = importlib.util.find_spec("kubernetes")
    source = Path(spec.origin if spec and spec.origin else "")
    return not (source.parent / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc").is_file()


# A package installed without bytecode (uv's default) where PYTHONDONTWRITEBYTECODE is set
# is compiled again on every `invoke` run: seconds for the Kubernetes client alone. Keep its
# bytecode under .cache/, as the lint gate's subprocesses do.
if sys.dont_write_bytecode and sys.pycache_prefix is None and _installed_without_bytecode():
    sys.pycache_prefix, sys.dont_write_bytecode = str(REPO_ROOT / ".cache" / "pycache"), False

# Every object this project creates carries this label; prune and teardown touch nothing else.
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "airflow-ha"
