"""Authentication by ServiceAccount token, authorization by the Roles and RoleBindings applied.

Like the API server's RBAC authorizer, restricted to what the rehearsal's pods use: namespaced
Roles bound to ServiceAccounts. ClusterRoles and ClusterRoleBindings are not emulated, so
a binding to a ClusterRole grants nothing here, and nothing at cluster scope is allowed to
anyone but the harness. Only the harness writes Roles and RoleBindings, so RBAC's escalation
prevention is not emulated: a ServiceAccount allowed to write Roles could grant itself anything.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .store import BY_PLURAL, ApiError, Selector, Store

ADMIN = "system:admin"  # the test harness itself, which applies the manifests


@dataclass(frozen=True)
class Request:
    verb: str  # get, list, watch, create, patch, delete
    group: str
    resource: str  # "pods" or "pods/log"
    namespace: str
    name: str = ""


class Authorizer:
    def __init__(self, store: Store):
        self.store = store
        self._tokens: dict[str, str] = {}

    def token(self, user: str) -> str:
        """A bearer token for `system:serviceaccount:NS:NAME` (or ADMIN), stable per user."""
        for token, holder in self._tokens.items():
            if holder == user:
                return token
        token = secrets.token_urlsafe(32)
        self._tokens[token] = user
        return token

    def service_account_token(self, namespace: str, name: str) -> str:
        return self.token(f"system:serviceaccount:{namespace}:{name}")

    def authenticate(self, authorization: str) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        user = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized")
        if user != ADMIN:
            _, _, namespace, name = user.split(":", 3)
            try:
                self.store.get(BY_PLURAL["", "serviceaccounts"], namespace, name)
            except ApiError:
                raise ApiError(
                    401, f"Unauthorized: ServiceAccount {namespace}/{name} does not exist"
                ) from None
        return user

    def authorize(self, user: str, request: Request) -> None:
        if user == ADMIN or self.allows(user, request):
            return
        what = f'{request.resource} "{request.name}"' if request.name else request.resource
        where = f' in the namespace "{request.namespace}"' if request.namespace else " at the cluster scope"
        raise ApiError(
            403,
            f'{what} is forbidden: User "{user}" cannot {request.verb} resource "{request.resource}" '
            f'in API group "{request.group}"{where}',
        )

    def allows(self, user: str, request: Request) -> bool:
        if not request.namespace:
            return False
        bindings, _ = self.store.list(
            BY_PLURAL["rbac.authorization.k8s.io", "rolebindings"], request.namespace, Selector([], [])
        )
        for binding in bindings:
            subjects = binding.get("subjects") or []
            if not any(self._names(subject, request.namespace) == user for subject in subjects):
                continue
            role_ref = binding.get("roleRef") or {}
            if role_ref.get("kind") != "Role":
                continue
            try:
                role = self.store.get(
                    BY_PLURAL["rbac.authorization.k8s.io", "roles"], request.namespace, role_ref["name"]
                )
            except ApiError:
                continue
            if any(self._rule_allows(rule, request) for rule in role.get("rules") or []):
                return True
        return False

    @staticmethod
    def _names(subject: dict[str, str], namespace: str) -> str:
        if subject.get("kind") != "ServiceAccount":
            return ""
        return f"system:serviceaccount:{subject.get('namespace', namespace)}:{subject.get('name')}"

    @staticmethod
    def _rule_allows(rule: dict[str, list[str]], request: Request) -> bool:
        def has(values: list[str] | None, wanted: str) -> bool:
            return "*" in (values or []) or wanted in (values or [])

        names = rule.get("resourceNames") or []
        return (
            has(rule.get("apiGroups"), request.group)
            and has(rule.get("resources"), request.resource)
            and has(rule.get("verbs"), request.verb)
            and (not names or request.name in names)
        )
