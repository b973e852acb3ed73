"""A Kubernetes API emulator and a Docker pod runner: test infrastructure, NOT Kubernetes.

It serves only the rehearsal's pods (tests/stack, and the benchmarks that bring that
rehearsal up): the KubernetesExecutor in the schedulers, `invoke smoke` in cluster mode, and
the rehearsal's step that creates the rendered objects. The API-level tests (deploy,
teardown, server-side apply, access reviews, RBAC escalation) run on the real API server in
tests/controlplane, not here.

What it is: an HTTPS server speaking enough of the Kubernetes API for those (discovery and
/version; create, get, list, patch and delete; label and field selectors; resourceVersion,
uid, generation, creationTimestamp; the status subresource; watch with replay,
timeoutSeconds and 410 Gone once the bounded history has moved on; merge patch and a
strategic-merge patch of maps; graceful pod deletion; pods/log), with strict admission
(kubernetes-validate for the target version, 422 on a bad object) and RBAC (ServiceAccount
tokens, the applied Roles and RoleBindings, 403 naming verb, resource and ServiceAccount).
The runner (runner.py) starts each created pod as a Docker container and reports a
kubelet-like status.

What it is not, and so never proves: scheduling, nodes, resource requests and CPU limits
(memory limits are Docker's cgroup limits, set by the rehearsal), quotas, NetworkPolicy,
PodDisruptionBudgets, controllers (no ReplicaSet or Pod is ever made from a Deployment,
StatefulSet or Job, and no workload status is written), garbage collection, defaulting,
immutable fields, a real kubelet (no probes on worker pods, no restarts), admission
webhooks, ClusterRoles, RBAC escalation prevention, server-side apply, JSON patch, PUT, or
etcd semantics beyond one process's memory. Only kind or a real cluster (`nox -s e2e`) prove
those.
"""
