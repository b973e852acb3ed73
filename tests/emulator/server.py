"""The emulator's HTTPS API: discovery and the REST paths of the resources in store.RESOURCES.

It serves the rehearsal's pods (tests/stack) and nothing else: the API-level tests run on the
real API server (tests/controlplane). NOT Kubernetes; see the package docstring for what it
does not prove.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .admission import strict_validation
from .rbac import ADMIN, Authorizer, Request
from .store import BY_PLURAL, RESOURCES, ApiError, Resource, Selector, Store

VERBS = ["create", "delete", "get", "list", "patch", "watch"]


@dataclass(frozen=True)
class Route:
    resource: Resource
    namespace: str
    name: str
    subresource: str


@dataclass(frozen=True)
class Audit:
    """One request as the emulator answered it; tests and the benchmark read these."""

    user: str
    verb: str
    path: str
    code: int
    message: str = ""
    group: str = ""
    resource: str = ""  # the plural, with its subresource ("pods/log"); "" for discovery
    namespace: str = ""  # the namespace RBAC evaluates the request in; "" at cluster scope


class Emulator:
    """The API on host:port over TLS, with its own CA; `close()` stops it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, version: str = "1.35"):
        self.version = version
        self.store = Store(admit=strict_validation(version))
        self.rbac = Authorizer(self.store)
        self.audit: deque[Audit] = deque(maxlen=20000)
        self.files = tempfile.TemporaryDirectory(prefix="executor-emulator-")
        self.ca_file, cert_file, key_file = write_certificates(Path(self.files.name), host)
        self.ca_pem = self.ca_file.read_text()
        self.admin_token = self.rbac.token(ADMIN)
        self._closing = threading.Event()
        self.watch_epoch = 0
        handler = type("BoundHandler", (Handler,), {"emulator": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.server.socket = context.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="emulator", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def end_watches(self) -> None:
        """End every open watch, as an API server restart does: clients must watch again.

        Authorization is checked per request, so a changed Role reaches a long-running
        watch only when it is opened again, in Kubernetes as here.
        """
        self.watch_epoch += 1

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.files.cleanup()

    def forbidden(self) -> list[Audit]:
        return [entry for entry in self.audit if entry.code == 403]


def write_certificates(folder: Path, host: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `host`, kubernetes.default.svc and loopback."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "executor-emulator-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-emulator")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.crt", folder / "tls.crt", folder / "tls.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


def resource_list(group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        base = {"singularName": "", "namespaced": r.namespaced, "kind": r.kind}
        resources.append({**base, "name": r.plural, "singularName": r.kind.lower(), "verbs": VERBS})
        if r.status:
            resources.append({**base, "name": f"{r.plural}/status", "verbs": ["get", "patch"]})
        if r.kind == "Pod":
            resources.append({**base, "name": "pods/log", "verbs": ["get"]})
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def group_list() -> dict[str, Any]:
    groups = []
    for name in sorted({r.group for r in RESOURCES if r.group}):
        (served,) = {r.version for r in RESOURCES if r.group == name}  # one version per group here
        version = {"groupVersion": f"{name}/{served}", "version": served}
        groups.append({"name": name, "versions": [version], "preferredVersion": version})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # idle keep-alive connections go after this
    emulator: Emulator

    def log_message(self, format: str, *args: Any) -> None:  # the audit log replaces stderr lines
        pass

    def do_GET(self) -> None:
        self.serve("GET")

    def do_POST(self) -> None:
        self.serve("POST")

    def do_PATCH(self) -> None:
        self.serve("PATCH")

    def do_DELETE(self) -> None:
        self.serve("DELETE")

    def serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        user, verb = "-", method.lower()
        seen: dict[str, str] = {}
        try:
            body = self.body()
            user = self.emulator.rbac.authenticate(self.headers.get("Authorization", ""))
            parts = [p for p in url.path.split("/") if p]
            discovery = self.discovery(parts)
            if discovery is not None:
                verb, code = "get", 200
                self.send_json(code, discovery)
            else:
                route = self.route(parts)
                verb = self.verb(method, route, query)
                request = self.request_attributes(verb, route)
                seen = {"group": request.group, "resource": request.resource, "namespace": request.namespace}
                self.emulator.rbac.authorize(user, request)
                if verb == "watch":
                    self.audit(user, verb, 200, **seen)
                    self.stream_watch(route, query)
                    return
                code, answer = self.call(verb, route, query, body)
                if isinstance(answer, str):
                    self.send_text(code, answer)
                else:
                    self.send_json(code, answer)
            self.audit(user, verb, code, **seen)
        except ApiError as error:
            self.audit(user, verb, error.code, error.message, **seen)
            self.send_json(error.code, error.status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def audit(self, user: str, verb: str, code: int, message: str = "", **request: str) -> None:
        self.emulator.audit.append(Audit(user, verb, self.path, code, message, **request))

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip()

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        try:
            return json.loads(self.rfile.read(length))
        except ValueError:
            raise ApiError(415, "the emulator accepts JSON bodies only") from None

    @staticmethod
    def request_attributes(verb: str, route: Route) -> Request:
        """What RBAC is asked, as the API server's request info says."""
        resource = route.resource.plural + (f"/{route.subresource}" if route.subresource else "")
        return Request(verb, route.resource.group, resource, route.namespace, route.name)

    @staticmethod
    def discovery(parts: list[str]) -> dict[str, Any] | None:
        if parts == ["version"]:
            return {"major": "1", "minor": "35", "gitVersion": "v1.35.0-emulator", "platform": "linux/amd64"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            return group_list()
        if parts == ["api", "v1"]:
            return resource_list("", "v1")
        if (
            len(parts) == 3
            and parts[0] == "apis"
            and any((r.group, r.version) == tuple(parts[1:]) for r in RESOURCES)
        ):
            return resource_list(parts[1], parts[2])
        return None

    @staticmethod
    def route(parts: list[str]) -> Route:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, f"the server could not find the requested resource: /{'/'.join(parts)}")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, rest[2]) in BY_PLURAL:
            namespace, rest = rest[1], rest[2:]
        resource = BY_PLURAL.get((group, rest[0])) if rest else None
        if resource is None or resource.version != version or len(rest) > 3:
            raise ApiError(404, f"the server could not find the requested resource: /{'/'.join(parts)}")
        if resource.namespaced and not namespace and len(rest) > 1:
            raise ApiError(404, f"{resource.plural} are namespaced: the path needs /namespaces/NAME")
        return Route(resource, namespace, *[*rest[1:], "", ""][:2])

    @staticmethod
    def verb(method: str, route: Route, query: dict[str, str]) -> str:
        if method == "GET":
            if route.name:
                return "get"
            return "watch" if query.get("watch", "").lower() in ("true", "1") else "list"
        if method == "POST" and not route.name:
            return "create"
        if route.name and method in ("PATCH", "DELETE"):
            return method.lower()
        raise ApiError(405, f"{method} is not supported on this path")

    def call(self, verb: str, route: Route, query: dict[str, str], body: Any) -> tuple[int, Any]:
        store, resource, namespace, name = self.emulator.store, route.resource, route.namespace, route.name
        if route.subresource == "log":
            if verb != "get" or resource.kind != "Pod":
                raise ApiError(405, "only pods/log GET is supported")
            return 200, self.pod_log(namespace, name, query)
        if route.subresource and verb in ("create", "delete"):
            raise ApiError(405, f"{verb} is not supported on {resource.plural}/{route.subresource}")
        if verb in ("create", "patch") and not isinstance(body, dict):
            raise ApiError(400, f"{verb} needs a JSON object body")
        if verb == "get":
            return 200, store.get(resource, namespace, name)
        if verb == "list":
            selector = Selector.parse(
                resource.plural, query.get("labelSelector", ""), query.get("fieldSelector", "")
            )
            items, version = store.list(resource, namespace, selector)
            return 200, {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(version)},
                "items": items,
            }
        if verb == "create":
            return 201, store.create(resource, namespace, body)
        if verb == "patch":
            return 200, store.patch(resource, namespace, name, body, self.content_type, route.subresource)
        options = body if isinstance(body, dict) else {}  # propagationPolicy is accepted and ignored
        grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        return 200, store.delete(resource, namespace, name, None if grace is None else int(grace))

    def pod_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        pod = self.emulator.store.get(BY_PLURAL["", "pods"], namespace, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or (names[0] if len(names) == 1 else "")
        if container not in names:
            raise ApiError(400, f"container {container!r} is not valid for pod {name}: choose one of {names}")
        reader = self.emulator.store.log_readers.get((namespace, name))
        if reader is None:
            raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start')
        tail = query.get("tailLines")
        return reader(container, int(tail) if tail else None)

    def stream_watch(self, route: Route, query: dict[str, str]) -> None:
        selector = Selector.parse(
            route.resource.plural, query.get("labelSelector", ""), query.get("fieldSelector", "")
        )
        epoch = self.emulator.watch_epoch
        events = self.emulator.store.watch(
            route.resource,
            route.namespace,
            selector,
            query.get("resourceVersion", ""),
            float(query.get("timeoutSeconds") or 1800),
            stopped=lambda: self.emulator.closing or self.emulator.watch_epoch != epoch,
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")  # so that no client reuses it after the stream
        self.end_headers()
        try:
            self.write_chunks(json.dumps({"type": t, "object": o}).encode() + b"\n" for t, o in events)
        finally:
            events.close()
        self.close_connection = True

    def write_chunks(self, chunks: Iterator[bytes]) -> None:
        for chunk in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def send_json(self, code: int, body: Any) -> None:
        self.send_bytes(code, json.dumps(body).encode(), "application/json")

    def send_text(self, code: int, text: str) -> None:
        self.send_bytes(code, text.encode(), "text/plain")

    def send_bytes(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
