"""Build, lint, deploy and smoke-test highly available Airflow 3 on Kubernetes.

tasks.py parses arguments; each module here owns one responsibility:
image, manifests, lint (the lint gate, a package), secrets, cluster, deploy and smoke.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every object this project creates carries this label; prune and teardown touch nothing else.
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "airflow-ha"
