"""A Kubernetes API emulator and a Docker pod runner: test infrastructure, NOT Kubernetes.

What it is: an HTTPS server speaking enough of the Kubernetes API for the KubernetesExecutor,
`invoke smoke`, `invoke deploy`/`teardown` and the rehearsal's apply step (discovery; create,
get, list, update, patch and delete; label and field selectors; resourceVersion, uid,
generation, creationTimestamp; the status subresource; watch with replay, timeoutSeconds and
410 Gone; JSON, merge and a strategic-merge patch of maps; server-side apply, simplified as
store.Store.apply says; graceful pod deletion; pods/log; SelfSubjectAccessReview), with strict
admission (kubernetes-validate for the target version, 422 on a bad object) and RBAC
(ServiceAccount tokens, the applied Roles and RoleBindings, 403 naming verb, resource and
ServiceAccount). The runner (runner.py) starts each created pod as a Docker container and
reports a kubelet-like status. Opt-in stand-in controllers (controllers.py) mark written
workloads ready without running any pod, for tests of deploy's waits.

What it is not, and so never proves: scheduling, nodes, resource requests and CPU limits
(memory limits are Docker's cgroup limits, set by the rehearsal), quotas, NetworkPolicy,
PodDisruptionBudgets, real controllers (no ReplicaSet or Pod is ever made from a Deployment,
StatefulSet or Job), garbage collection, defaulting, immutable fields other than a Job's
template and selector, a real kubelet (no probes on worker pods, no restarts), admission
webhooks, ClusterRoles (in RBAC and in its escalation checks), or etcd semantics beyond one
process's memory. Only kind or a real
cluster (`nox -s e2e`) prove those.
"""
