"""Checks that the generated profile is what the benchmarks claim to feed the driver.

Run: ``python benchmarks/check_profile.py`` (exit 1 on the first failed check). It checks the
sizes, determinism (also across ``PYTHONHASHSEED``), that every frame decodes back to the same
message, Felix's ordering, and referential integrity (every IP set, policy and profile a message
refers to was sent before it, and every IP set and policy sent is used).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.profile import (  # noqa: E402
    NODE_AT_SCALE,
    SMALL,
    Sizes,
    decode_stream,
    encode_stream,
    generate,
    profile_summary,
)
from calico_vpp_driver.felix import felixbackend_pb2 as pb  # noqa: E402

SET_ID = re.compile(r"^[sn]:[A-Za-z0-9_-]{27}$")
PORT_MEMBER = re.compile(r"^(\d+\.\d+\.\d+\.\d+),(tcp|udp|sctp):(\d+)$")
IFACE = re.compile(r"^cali[0-9a-f]{11}$")

# Felix's EventSequencer.Flush() order for a startup (updates only, no removes).
FLUSH_ORDER = [
    "config_update",
    "ipset_update",
    "active_policy_update",
    "active_profile_update",
    "workload_endpoint_update",
    "service_account_update",
    "namespace_update",
    "vtep_update",
    "route_update",
    "host_metadata_update",
    "ipam_pool_update",
    "encapsulation",
    "in_sync",
]

SET_FIELDS_NET = ("src_ip_set_ids", "dst_ip_set_ids", "not_src_ip_set_ids", "not_dst_ip_set_ids")
SET_FIELDS_NP = (
    "src_named_port_ip_set_ids",
    "dst_named_port_ip_set_ids",
    "not_src_named_port_ip_set_ids",
    "not_dst_named_port_ip_set_ids",
)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def check_stream(msgs: list[pb.ToDataplane], sizes: Sizes) -> None:
    s = profile_summary(msgs)
    # Sizes.
    check(s["local_endpoints"] == sizes.local_endpoints, f"local endpoints {s['local_endpoints']}")
    check(
        s["remote_endpoints"] == sizes.remote_endpoints,
        f"remote endpoints in IP sets {s['remote_endpoints']}",
    )
    check(s["policies"] == sizes.policies, f"policies {s['policies']}")
    check(
        abs(s["rules_per_policy"] - sizes.rules_per_policy) < 0.5, f"rules per policy {s['rules_per_policy']}"
    )
    check(set(s["policies_by_tier"]) == {"security", "platform", "default"}, "tiers")
    check(
        set(s["policies_by_kind"]) == {"GlobalNetworkPolicy", "NetworkPolicy", "KubernetesNetworkPolicy"},
        "policy kinds",
    )
    check(s["ip_sets"] == sizes.ip_sets + 1, f"ip sets {s['ip_sets']}")
    check(
        s["ip_set_members"] == sizes.ip_set_members + sizes.big_net_set_members,
        f"members {s['ip_set_members']}",
    )
    check(s["largest_ip_set"] == sizes.big_net_set_members, "the big NET set")
    check(s["ip_sets_by_type"].get("IP_AND_PORT") == sizes.named_port_sets, "named-port sets")
    check(s["nodes"] == sizes.nodes and s["vteps"] == sizes.nodes, "nodes / VTEPs")
    check(1 <= s["pools"] <= 2, "pools")
    check(s["namespaces"] == sizes.namespaces, "namespaces")
    check(s["service_accounts"] >= sizes.namespaces, "service accounts")
    check(s["by_payload"].get("<unknown>", 0) == 0, "every message has a known payload")

    # Sequence numbers and Felix's order.
    check([m.sequence_number for m in msgs] == list(range(len(msgs))), "sequence numbers")
    check(msgs[0].WhichOneof("payload") == "config_update", "ConfigUpdate first")
    check(msgs[0].SerializeToString().find(b"\x78") != 0, "seq 0 absent")
    check(msgs[-1].WhichOneof("payload") == "in_sync", "InSync last")
    ranks = [FLUSH_ORDER.index(m.WhichOneof("payload") or "") for m in msgs]
    check(ranks == sorted(ranks), "messages in Felix's Flush() order")
    cfg = msgs[0].config_update
    check(cfg.config.get("FelixHostname") == "node-1", "FelixHostname")
    check(all(isinstance(v, str) for v in cfg.config.values()), "raw string config")

    # IP sets.
    sets: dict[str, int] = {}
    for m in msgs:
        if m.WhichOneof("payload") != "ipset_update":
            continue
        u = m.ipset_update
        check(SET_ID.match(u.id) is not None, f"set id format {u.id}")
        check(u.id not in sets, f"duplicate set {u.id}")
        check(len(set(u.members)) == len(u.members), f"duplicate members in {u.id}")
        check(len(u.members) > 0, f"empty set {u.id}")
        if u.type == pb.IPSetUpdate.IP_AND_PORT:
            check(u.id.startswith("n:"), "named-port set id prefix")
            for mem in u.members:
                mt = PORT_MEMBER.match(mem)
                check(mt is not None and 0 < int(mt.group(3)) < 65536, f"member {mem}")
                ipaddress.IPv4Address(mt.group(1))  # type: ignore[union-attr]
        else:
            check(u.type == pb.IPSetUpdate.NET and u.id.startswith("s:"), "NET set")
            for mem in u.members:
                check("/" in mem, f"NET member {mem} is a CIDR")
                ipaddress.IPv4Network(mem)  # strict: no host bits
        sets[u.id] = u.type

    # Policies: every referenced set exists (and was sent before), with the right type.
    used_sets: set[str] = set()
    policies: dict[tuple[str, str, str], pb.Policy] = {}
    for m in msgs:
        if m.WhichOneof("payload") != "active_policy_update":
            continue
        p = m.active_policy_update
        key = (p.id.name, p.id.namespace, p.id.kind)
        check(key not in policies, f"duplicate policy {key}")
        check(bool(p.policy.tier), "policy tier set")
        check((p.id.kind == "GlobalNetworkPolicy") == (p.id.namespace == ""), "namespace")
        policies[key] = p.policy
        for r in [*p.policy.inbound_rules, *p.policy.outbound_rules]:
            check(r.action in ("allow", "deny", "next-tier", "log"), f"action {r.action}")
            check(bool(r.rule_id), "rule_id")
            for f in SET_FIELDS_NET:
                for sid in getattr(r, f):
                    check(sets.get(sid) == pb.IPSetUpdate.NET, f"{f} {sid} missing or not NET")
                    used_sets.add(sid)
            for f in SET_FIELDS_NP:
                for sid in getattr(r, f):
                    check(sets.get(sid) == pb.IPSetUpdate.IP_AND_PORT, f"{f} {sid}")
                    used_sets.add(sid)
            for net in [*r.src_net, *r.dst_net, *r.not_src_net, *r.not_dst_net]:
                ipaddress.ip_network(net)
    check(used_sets == set(sets), f"{len(set(sets) - used_sets)} IP sets no rule uses")

    # Profiles and endpoints.
    profiles = {
        m.active_profile_update.id.name for m in msgs if m.WhichOneof("payload") == "active_profile_update"
    }
    used_pols: set[tuple[str, str, str]] = set()
    pool = ipaddress.IPv4Network("10.65.0.0/16")
    for m in msgs:
        if m.WhichOneof("payload") != "workload_endpoint_update":
            continue
        wu = m.workload_endpoint_update
        ns, _, pod = wu.id.workload_id.partition("/")
        check(wu.id.orchestrator_id == "k8s" and wu.id.endpoint_id == "eth0" and pod != "", "wep id")
        ep = wu.endpoint
        check(IFACE.match(ep.name) is not None, f"interface name {ep.name}")
        check(ep.state == "active", "state")
        check(ep.profile_ids[0] == f"kns.{ns}" and ep.profile_ids[1].startswith(f"ksa.{ns}."), "profile ids")
        check(all(p in profiles for p in ep.profile_ids), "profiles sent")
        for net in ep.ipv4_nets:
            n = ipaddress.IPv4Network(net)
            check(n.prefixlen == 32 and n.subnet_of(pool), f"ipv4 net {net}")
        for ti in ep.tiers:
            check(ti.default_action in ("Deny", "Pass"), "default action")
            for pid in [*ti.ingress_policies, *ti.egress_policies]:
                key = (pid.name, pid.namespace, pid.kind)
                check(key in policies, f"policy {key} not sent")
                check(policies[key].tier == ti.name, "policy in its tier")
                check(pid.namespace in ("", ns), "namespaced policy from another namespace")
                used_pols.add(key)
    check(used_pols == set(policies), f"{len(set(policies) - used_pols)} inactive policies")

    # Routing: VTEP before routes, dst_node_ip on every workload route, CIDR host metadata.
    vteps: set[str] = set()
    for m in msgs:
        which = m.WhichOneof("payload")
        if which == "vtep_update":
            vteps.add(m.vtep_update.node)
        elif which == "route_update":
            rt = m.route_update
            if rt.types & (pb.REMOTE_WORKLOAD | pb.REMOTE_TUNNEL):
                check(rt.dst_node_name in vteps, "route before its VTEP")
                check(rt.dst_node_ip != "" and rt.ip_pool_type == pb.VXLAN, "workload route")
            ipaddress.IPv4Network(rt.dst)
        elif which == "host_metadata_update":
            h = m.host_metadata_update
            ipaddress.IPv4Interface(h.ipv4_addr)
            check("/" in h.ipv4_addr, "v3.33 CIDR-form host address")


def main() -> int:
    for name, sizes in (("small", SMALL), ("node-at-scale", NODE_AT_SCALE)):
        msgs = generate(0, sizes)
        data = encode_stream(msgs)
        back = decode_stream(data)
        check(len(back) == len(msgs), "frame count")
        check(all(a == b for a, b in zip(back, msgs, strict=True)), "every frame decodes to its message")
        check(encode_stream(back) == data, "re-encoding is byte-identical")
        check_stream(back, sizes)
        check(encode_stream(generate(0, sizes)) == data, "same seed, same bytes")
        check(encode_stream(generate(1, sizes)) != data, "another seed, another stream")
        print(f"{name}: {len(msgs)} messages, {len(data)} bytes: ok")
    # Same bytes whatever Python's string hashing seed is.
    code = (
        f"import hashlib,sys; sys.path.insert(0, {str(HERE.parent)!r}); "
        "from benchmarks.profile import encode_stream, generate; "
        "print(hashlib.sha256(encode_stream(generate(0))).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    check(len(digests) == 1, f"PYTHONHASHSEED changes the stream: {digests}")
    print(f"deterministic across PYTHONHASHSEED: {digests.pop()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
