"""The gRPC server the Calico CNI plugin calls to create and delete pods' interfaces.

Calico's CNI plugin, configured with `dataplane_options: {type: grpc, socket: unix:///...}`, does
the IPAM and the Calico datastore work itself, then hands the networking of the pod to this
server (`cni.CniDataplane/Add` and `/Del`, see proto/cnibackend.proto). The server only
validates and converts: `parse_add` turns the wire message into a `PodRequest` (types.py), and a
`PodHandler` does the work. Every request gets a reply: a refusal or a failure becomes
`successful=false` with a message the operator reads in kubelet's events, so it names the pod,
its netns and interface, and what went wrong. An unexpected exception is logged with its
traceback and reported as an internal error; the server keeps serving.

The plugin gives each call a 5 s deadline. A slower handler still finishes (its work is
idempotent and the plugin retries), and the log says the reply was too late.

The socket is created mode 0600 (only root, which the plugin runs as, may ask for interfaces)
without a window where it is reachable with looser permissions: it is bound inside a private
directory, chmod-ed, then renamed over the configured path. The generic-handler API is used
instead of generated `_grpc` stubs; the method paths are the plugin's.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import TypeVar

import grpc
import structlog

from calico_vpp_driver.cni import cnibackend_pb2 as pb
from calico_vpp_driver.cni.types import (
    IPAddress,
    IPInterface,
    IPNetwork,
    PodError,
    PodHandler,
    PodRequest,
    PodResult,
    WorkloadIdentity,
    is_go_mac,
)

log = structlog.get_logger("calico_vpp_driver.cni.server")

SERVICE = "cni.CniDataplane"
ADD_METHOD = f"/{SERVICE}/Add"
DEL_METHOD = f"/{SERVICE}/Del"

PLUGIN_DEADLINE_S = 5.0  # grpc_dataplane.go: `timeout = 5 * time.Second` for both calls
_NO_GATEWAY = frozenset({"", "<nil>"})  # Go prints a nil net.IP as "<nil>"
_IFNAMSIZ = 16  # Linux interface names are at most 15 bytes
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the terminating NUL
_MIN_MTU, _MAX_MTU = 68, 65535  # RFC 791's minimum; the largest an IP packet can be
_LOCK_STRIPES = 64

_Rep = TypeVar("_Rep")


class CniServerError(RuntimeError):
    """The server cannot start on the configured socket (the message says why)."""


# --- request conversion -------------------------------------------------------------------------


def describe_pod(req: pb.AddRequest | pb.DelRequest) -> str:
    """How error messages and logs name the pod: the Kubernetes name when the request has it,
    else the netns and interface (a DelRequest carries nothing more)."""
    where = f"netns {req.netns or '<none>'}, interface {req.interface_name or '<none>'}"
    if isinstance(req, pb.AddRequest) and req.HasField("workload"):
        w = req.workload
        if w.namespace and w.pod:
            return f"pod {w.namespace}/{w.pod} ({where})"
        if w.name:
            return f"workload endpoint {w.name} ({where})"
    return f"pod ({where})"


def parse_add(req: pb.AddRequest) -> PodRequest:
    """Validate an AddRequest and convert it; raise PodError naming the pod and the bad field.

    Addresses must carry their prefix length (the plugin sends "10.0.0.5/32"); gateways that are
    empty or Go's "<nil>" mean none; routes are normalised to their network address; an MTU of
    0 or less means the driver's configured pod MTU."""
    pod = describe_pod(req)
    interface_name = _check_ifname(pod, "interface_name", req.interface_name)
    host_interface_name = _check_ifname(pod, "desired_host_interface_name", req.desired_host_interface_name)
    if not req.netns.startswith("/"):
        raise PodError(f"{pod}: netns {req.netns!r} is not a path to a network namespace")
    addresses, gateways = _parse_ips(pod, req.container_ips)
    return PodRequest(
        netns=req.netns,
        interface_name=interface_name,
        host_interface_name=host_interface_name,
        identity=workload_identity(pod, req.workload, interface_name),
        addresses=addresses,
        gateways=gateways,
        routes=_parse_routes(pod, req.container_routes),
        mtu=_parse_mtu(pod, req.settings.mtu),
        allow_ip_forwarding=req.settings.allow_ip_forwarding,
        options=tuple(sorted(req.dataplane_options.items())),
    )


def _check_ifname(pod: str, field: str, name: str) -> str:
    """Linux's own rule (net/core/dev.c dev_valid_name): 1-15 bytes, no '/', ':' or space,
    not "." or ".."."""
    bad = (
        not name
        or len(name.encode()) >= _IFNAMSIZ
        or name in (".", "..")
        or any(c in "/:" or c.isspace() for c in name)
    )
    if bad:
        raise PodError(f"{pod}: {field} {name!r} is not a valid Linux interface name (1-15 characters)")
    return name


def _parse_ips(pod: str, ips: Iterable[pb.IPConfig]) -> tuple[tuple[IPInterface, ...], tuple[IPAddress, ...]]:
    addresses: list[IPInterface] = []
    gateways: list[IPAddress] = []
    for i, ip in enumerate(ips):
        if "/" not in ip.address:
            raise PodError(f"{pod}: container_ips[{i}].address {ip.address!r} has no prefix length")
        try:
            address = ipaddress.ip_interface(ip.address)
        except ValueError as e:
            raise PodError(
                f"{pod}: container_ips[{i}].address {ip.address!r} is not an IP address: {e}"
            ) from e
        if address not in addresses:
            addresses.append(address)
        if ip.gateway in _NO_GATEWAY:
            continue
        try:
            gateway = ipaddress.ip_address(ip.gateway)
        except ValueError as e:
            raise PodError(f"{pod}: container_ips[{i}].gateway {ip.gateway!r} is not an IP address") from e
        if gateway.version != address.version:
            raise PodError(
                f"{pod}: container_ips[{i}].gateway {ip.gateway} is not of the family of address {ip.address}"
            )
        if gateway not in gateways:
            gateways.append(gateway)
    if not addresses:
        raise PodError(f"{pod}: the request has no container_ips; IPAM gave the pod no address")
    return tuple(addresses), tuple(gateways)


def _parse_routes(pod: str, routes: Iterable[str]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for i, route in enumerate(routes):
        if "/" not in route:
            raise PodError(f"{pod}: container_routes[{i}] {route!r} has no prefix length")
        try:
            net = ipaddress.ip_network(route, strict=False)
        except ValueError as e:
            raise PodError(f"{pod}: container_routes[{i}] {route!r} is not a CIDR: {e}") from e
        if net not in out:
            out.append(net)
    return tuple(out)


def _parse_mtu(pod: str, mtu: int) -> int:
    if mtu <= 0:
        return 0
    if not _MIN_MTU <= mtu <= _MAX_MTU:
        raise PodError(f"{pod}: settings.mtu {mtu} is outside {_MIN_MTU}-{_MAX_MTU}")
    return mtu


def workload_identity(pod: str, w: pb.WorkloadIDs, interface_name: str) -> WorkloadIdentity:
    """The pod's `WorkloadEndpointID` as Felix will send it, so the handler can match this
    request with Felix's workload endpoint.

    Felix's key comes from the WorkloadEndpoint's resource name, "<node>-<orch>-<id>-<endpoint>"
    with dashes inside parts doubled (libcalico-go names.ConvertWorkloadEndpointV3KeyToV1Key):
    workload = "<namespace>/<id>", where <id> is the pod name for "k8s" and the container ID
    for "cni" (not in the request otherwise, so it is read back out of the name)."""
    if not w.orchestrator:
        raise PodError(f"{pod}: workload.orchestrator is empty")
    parts = split_wep_name(w.name)
    if w.orchestrator == "k8s":
        if not w.namespace or not w.pod:
            raise PodError(f"{pod}: a k8s workload needs workload.namespace and workload.pod")
        workload_id = w.pod
    elif len(parts) == 4 and parts[1] == w.orchestrator and parts[2]:
        workload_id = parts[2]
    else:
        raise PodError(
            f"{pod}: workload.name {w.name!r} is not a <node>-{w.orchestrator}-<workload>-<endpoint> name"
        )
    endpoint = w.endpoint or (parts[3] if len(parts) == 4 else "") or interface_name
    return WorkloadIdentity(
        orchestrator=w.orchestrator, workload=f"{w.namespace}/{workload_id}", endpoint=endpoint
    )


def split_wep_name(name: str) -> list[str]:
    """Split a WorkloadEndpoint name at its single dashes, undoing the "--" escaping (the
    algorithm of libcalico-go names.extractParts: a dash at position 0 never splits)."""
    if not name:
        return []
    parts: list[str] = []
    start, i = 0, 1
    while i < len(name):
        if name[i] == "-":
            if i + 1 < len(name) and name[i + 1] == "-":
                i += 2
                continue
            parts.append(name[start:i].replace("--", "-"))
            start = i + 1
        i += 1
    parts.append(name[start:].replace("--", "-"))
    return parts


def _socket_path(path: str) -> str:
    """ "unix:///x", "unix:/x" or "/x" -> "/x" (the plugin's config spells it as a gRPC target)."""
    if path.startswith("unix://"):
        path = path[len("unix://") :]
    elif path.startswith("unix:"):
        path = path[len("unix:") :]
    if not path.startswith("/"):
        raise ValueError(f"CNI socket {path!r} must be an absolute path (unix:///path or /path)")
    if len(path.encode()) > _SUN_PATH_MAX:
        raise ValueError(
            f"CNI socket path {path!r} is longer than the {_SUN_PATH_MAX} bytes a unix socket allows"
        )
    return os.path.normpath(path)


# --- the server ---------------------------------------------------------------------------------


class CniServer:
    """Serves `cni.CniDataplane` on a unix socket, calling `handler` from a thread pool.

    Requests for the same pod (netns and interface) are serialised, so a DEL that kubelet sends
    while an ADD is still running waits for it; different pods run concurrently, so the
    handler must be thread-safe."""

    def __init__(self, socket_path: str, handler: PodHandler, *, max_workers: int = 4) -> None:
        self.path = _socket_path(socket_path)
        self._handler = handler
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def start(self) -> CniServer:
        """Bind the socket (0600, parent directory created, a stale socket replaced) and serve.
        Raise CniServerError if a live server already listens there or the path is not a socket."""
        if self._server is not None:
            raise CniServerError(f"CNI server on {self.path} is already started")
        parent = os.path.dirname(self.path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        self._check_existing()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="cni"),
            handlers=[self._generic_handler()],
        )
        private = tempfile.mkdtemp(prefix=".cni", dir=parent)  # mode 0700: nobody else can connect
        staging = os.path.join(private, "s")
        try:
            if server.add_insecure_port("unix:" + staging) == 0:
                raise CniServerError(f"cannot bind a unix socket at {staging}")
            os.chmod(staging, 0o600)
            os.replace(staging, self.path)  # atomic: a stale socket is swapped out, never missing
        except BaseException:
            server.stop(None)
            raise
        finally:
            _remove_quietly(staging)
            os.rmdir(private)
        st = os.lstat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        server.start()
        self._server = server
        log.info("cni_server_started", socket=self.path, max_workers=self._max_workers)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (in-flight requests get `grace` seconds) and remove the socket, unless
        another server has since replaced it."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop(grace).wait()
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        log.info("cni_server_stopped", socket=self.path)

    def _check_existing(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise CniServerError(
                f"CNI socket path {self.path} exists and is not a socket; refusing to replace it"
            )
        if _is_listening(self.path):
            raise CniServerError(
                f"another server is listening on the CNI socket {self.path} (is another driver running?)"
            )
        log.info("cni_socket_stale_replaced", socket=self.path)

    def _generic_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Add": grpc.unary_unary_rpc_method_handler(
                    self._add,
                    request_deserializer=pb.AddRequest.FromString,
                    response_serializer=pb.AddReply.SerializeToString,
                ),
                "Del": grpc.unary_unary_rpc_method_handler(
                    self._del,
                    request_deserializer=pb.DelRequest.FromString,
                    response_serializer=pb.DelReply.SerializeToString,
                ),
            },
        )

    def _lock_for(self, netns: str, interface_name: str) -> threading.Lock:
        return self._locks[zlib.crc32(f"{netns}\0{interface_name}".encode()) % _LOCK_STRIPES]

    def _add(self, req: pb.AddRequest, context: grpc.ServicerContext) -> pb.AddReply:
        pod = describe_pod(req)
        fields = {"pod": pod, "host_interface": req.desired_host_interface_name}
        addresses = [ip.address for ip in req.container_ips]
        log.info("cni_add_request", **fields, addresses=addresses, routes=list(req.container_routes))

        def work() -> pb.AddReply:
            request = parse_add(req)
            fields["workload"] = str(request.identity)  # as Felix's WorkloadEndpointID will name it
            with self._lock_for(request.netns, request.interface_name):
                result = self._handler.add(request)
            if not isinstance(result, PodResult) or not result.host_interface_name:
                raise RuntimeError(f"the pod handler returned {result!r} instead of a host interface")
            if not is_go_mac(result.container_mac):
                # The plugin would fail the ADD itself (net.ParseMAC) after this "success".
                raise RuntimeError(
                    f"the pod handler returned container MAC {result.container_mac!r}, which the "
                    "Calico CNI plugin cannot parse"
                )
            fields["host_interface"] = result.host_interface_name
            fields["mac"] = result.container_mac
            return pb.AddReply(
                successful=True,
                host_interface_name=result.host_interface_name,
                container_mac=result.container_mac,
            )

        return _serve(
            "add", pod, fields, context, work, lambda msg: pb.AddReply(successful=False, error_message=msg)
        )

    def _del(self, req: pb.DelRequest, context: grpc.ServicerContext) -> pb.DelReply:
        pod = describe_pod(req)
        fields: dict[str, str] = {"pod": pod}
        log.info("cni_del_request", **fields)

        def work() -> pb.DelReply:
            # CNI allows a DEL without a netns (the runtime already removed it; Calico's plugin
            # passes it on as ""): the request then names only the interface, and the handler
            # removes the pods with that interface whose namespace no longer exists.
            if req.netns and not req.netns.startswith("/"):
                raise PodError(f"{pod}: netns {req.netns!r} is not a path to a network namespace")
            _check_ifname(pod, "interface_name", req.interface_name)
            with self._lock_for(req.netns, req.interface_name):
                self._handler.delete(req.netns, req.interface_name)
            return pb.DelReply(successful=True)

        return _serve(
            "del", pod, fields, context, work, lambda msg: pb.DelReply(successful=False, error_message=msg)
        )


def _serve(
    verb: str,
    pod: str,
    fields: dict[str, str],
    context: grpc.ServicerContext,
    work: Callable[[], _Rep],
    failure: Callable[[str], _Rep],
) -> _Rep:
    """Run one request: time it, turn every failure into a reply, log the outcome."""
    start = time.monotonic()
    try:
        reply = work()
        outcome = "done"
    except PodError as e:
        reply = failure(str(e) if pod in str(e) else f"{pod}: {e}")
        outcome = "failed"
        log.warning(f"cni_{verb}_failed", **fields, error=str(e), duration_ms=_ms(start))
    except Exception as e:
        reply = failure(
            f"{pod}: internal error in calico-vpp-driver during CNI {verb.upper()}: "
            f"{type(e).__name__}: {e} (the driver's log has the traceback)"
        )
        outcome = "internal_error"
        log.exception(f"cni_{verb}_internal_error", **fields, duration_ms=_ms(start))
    duration_ms = _ms(start)
    if outcome == "done":
        log.info(f"cni_{verb}_done", **fields, duration_ms=duration_ms)
    if duration_ms > PLUGIN_DEADLINE_S * 1000 or not context.is_active():
        # The plugin stopped waiting: it reports a deadline error and kubelet retries the pod.
        log.warning(f"cni_{verb}_reply_too_late", **fields, outcome=outcome, duration_ms=duration_ms)
    return reply


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 3)


def _is_listening(path: str) -> bool:
    """True when something accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
