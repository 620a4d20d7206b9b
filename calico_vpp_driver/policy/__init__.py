"""Calico policy semantics for the driver: the verdict oracle every rendering is tested against."""

from .verdict import (
    LOCAL_HOST,
    Direction,
    LocalHost,
    Packet,
    PolicyError,
    Side,
    Verdict,
    connection_verdict,
    endpoint_problems,
    endpoint_verdict,
    host_endpoint_verdict,
    rule_exists_for_family,
    rule_matches,
    workload_to_host_verdict,
)

__all__ = [
    "LOCAL_HOST",
    "Direction",
    "LocalHost",
    "Packet",
    "PolicyError",
    "Side",
    "Verdict",
    "connection_verdict",
    "endpoint_problems",
    "endpoint_verdict",
    "host_endpoint_verdict",
    "rule_exists_for_family",
    "rule_matches",
    "workload_to_host_verdict",
]
