"""The simulator's debug CLI (`cli_inband`): `run_cli(state, command) -> str`.

Commands (words may be abbreviated to any unique prefix, as in VPP's CLI):

    show version
    show interface [<name>]
    show interface address
    show npol interfaces | policies [verbose] | rules | ipsets
    show acl-plugin acl [index <N>]
    show acl-plugin interface
    show ip fib [table <N>] [<prefix>]      show ip6 fib [table <N>] [<prefix>]
    show cnat translation | session | snat-policy
    probe from <ip> to <ip> proto <name|number> [sport <N>] [dport <N>]
          [icmp-type <T> [icmp-code <C>]] [icmp-id <N>] [rx <sw_if_index|name>] [new-flow]

Output follows the layout of VPP's own formatters (`show interface`: interface_cli.c;
`show npol ...`: npol_format.c; `show acl-plugin acl`: acl.c acl_print_acl_x; `show
cnat translation`: cnat_translation.c), approximated where VPP prints internals the
simulator does not have (FIB DPOs, counters). `probe` is the simulator's own: its reply
starts with the verdict word `allow` or `deny` on a line of its own, followed by the
trace of `packet.evaluate` (indented). `new-flow` judges the packet without cnat/acl
sessions (and records none). An unknown command answers VPP's "unknown input `...'".
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address, ip_network

from .handlers import VERSION
from .packet import Packet, evaluate, parse_proto
from .state import (
    NPOL_CIDR,
    NPOL_FILTER_ICMP_CODE,
    NPOL_FILTER_ICMP_TYPE,
    NPOL_FILTER_L4_PROTO,
    NPOL_FILTER_NONE,
    NPOL_IP,
    NPOL_IP_AND_PORT,
    NPOL_NET,
    NPOL_PORT_RANGE,
    PROTO_NAMES,
    U32_MAX,
    FibEntry,
    NpolEntry,
    NpolFilter,
    NpolIpset,
    NpolPolicy,
    NpolRule,
    VppState,
)

Command = Callable[[VppState, list[str]], str]

RULE_ACTIONS = {0: "allow", 1: "deny", 2: "log", 3: "pass"}
IPSET_TYPES = {NPOL_IP: "ip", NPOL_IP_AND_PORT: "ip+port", NPOL_NET: "prefix"}


class CliError(Exception):
    pass


def _proto(value: int) -> str:
    return PROTO_NAMES.get(value, f"unknown 0x{value:02x}")


# ---------------------------------------------------------------------------------------
# show version / interface


def show_version(state: VppState, args: list[str]) -> str:
    return f"vpp v{VERSION} built by sim on simulator at 2026-08-22T03:00:55\n"


def show_interface(state: VppState, args: list[str]) -> str:
    if args and "address".startswith(args[0]) and len(args[0]) >= 2:
        return show_interface_address(state, args[1:])
    head = (
        f"{'Name':^32}{'Idx':^5}{'State':^10}{'MTU (L3/IP4/IP6/MPLS)':^21}"
        f"{'Counter':^16}{'Count':^16}".rstrip()
        + "\n"
    )
    lines = [head]
    for idx, itf in state.interfaces.items():
        if args and itf.name != args[0]:
            continue
        state_word = "up" if itf.admin_up else "down"
        mtus = "/".join(str(m) for m in (itf.sw_mtu if itf.sw_mtu is not None else (itf.mtu, 0, 0, 0)))
        lines.append(f"{itf.name:<32}{idx:^5}{state_word:^10}{mtus:^21}".rstrip() + "\n")
    return "".join(lines)


def show_interface_address(state: VppState, args: list[str]) -> str:
    out: list[str] = []
    for _idx, itf in state.interfaces.items():
        out.append(f"{itf.name} ({'up' if itf.admin_up else 'dn'}):\n")
        if itf.unnumbered_to is not None:
            out.append(f"  unnumbered, use {state.if_name(itf.unnumbered_to)}\n")
        for addr in itf.addresses:
            table = itf.table(addr.version == 6)
            out.append(
                f"  L3 {addr.with_prefixlen}"
                + (f" ip{addr.version} table-id {table}" if table else "")
                + "\n"
            )
    return "".join(out)


# ---------------------------------------------------------------------------------------
# show npol (npol_format.c)


def _fmt_ipset(set_id: int, ipset: NpolIpset | None) -> str:
    if ipset is None:
        return "deleted ipset"
    members = []
    for m in ipset.members:
        if isinstance(m, tuple):
            members.append(f"{_proto(m[1])} {m[0]};{m[2]}")
        else:
            members.append(str(m))
    return (
        f"[ipset#{set_id};{IPSET_TYPES.get(ipset.type, 'unknownipsettype')};"
        + "".join(f"{m}," for m in members)
        + "]"
    )


def _fmt_filter(f: NpolFilter) -> str:
    op = "==" if f.should_match else "!="
    if f.type == NPOL_FILTER_ICMP_TYPE:
        return f"icmp-type{op}{f.value}"
    if f.type == NPOL_FILTER_ICMP_CODE:
        return f"icmp-code{op}{f.value}"
    if f.type == NPOL_FILTER_L4_PROTO:
        return f"proto{op}{_proto(f.value)}"
    return "unknown"


def _fmt_entry(state: VppState, e: NpolEntry) -> str:
    s = ("src" if e.is_src else "dst") + ("!=" if e.is_not else "==")
    if e.type == NPOL_CIDR and e.cidr is not None:
        return s + str(e.cidr)
    if e.type == NPOL_PORT_RANGE and e.port_range is not None:
        a, b = e.port_range
        return s + (f"[{a}-{b}]" if a != b else str(a))
    if e.set_id is not None:
        return s + _fmt_ipset(e.set_id, state.npol_ipsets.get(e.set_id))
    return s + "unknown"


def _entries_in_vpp_order(rule: NpolRule) -> list[NpolEntry]:
    """npol_rule_get_entries: by flag (dst, src, !dst, !src), then prefixes, port ranges,
    ip sets, ip+port sets."""
    order = [NPOL_CIDR, NPOL_PORT_RANGE, 3, 2]
    out: list[NpolEntry] = []
    for flags in range(4):
        for etype in order:
            out += [e for e in rule.entries if e.flags == flags and e.type == etype]
    return out


def fmt_rule(state: VppState, rule_id: int, rule: NpolRule | None) -> str:
    if rule is None:
        return "deleted rule"
    parts = [f"{_fmt_filter(f)}," for f in rule.filters if f.type != NPOL_FILTER_NONE]
    parts += [f"{_fmt_entry(state, e)}," for e in _entries_in_vpp_order(rule)]
    return f"[rule#{rule_id};{RULE_ACTIONS.get(rule.action, 'unknownaction')}][" + "".join(parts) + "]"


def _fmt_policy(
    state: VppState, policy_id: int, policy: NpolPolicy | None, indent: int, mode: str, invert: int
) -> str:
    """format_npol_policy; mode: quiet | verbose | only_rx | only_tx."""
    if policy is None:
        return "deleted policy"
    rx, tx = (policy.tx, policy.rx) if invert else (policy.rx, policy.tx)
    if mode == "quiet":
        return f"[policy#{policy_id}] rx-rules:{len(rx)} tx-rules:{len(tx)}\n"
    s = f"[policy#{policy_id}]\n"
    pad = " " * (indent + 2)
    if mode != "only_rx":
        for rid in tx:
            s += f"{pad}tx:{fmt_rule(state, rid, state.npol_rules.get(rid))}\n"
    if mode != "only_tx":
        for rid in rx:
            s += f"{pad}rx:{fmt_rule(state, rid, state.npol_rules.get(rid))}\n"
    return s


def show_npol(state: VppState, args: list[str]) -> str:
    if not args:
        raise CliError("show npol: expected interfaces | policies | rules | ipsets")
    what = _pick(args[0], ["interfaces", "policies", "rules", "ipsets"])
    if what == "rules":
        return "".join(fmt_rule(state, rid, rule) + "\n" for rid, rule in state.npol_rules.items())
    if what == "ipsets":
        return "".join(_fmt_ipset(sid, ipset) + "\n" for sid, ipset in state.npol_ipsets.items())
    if what == "policies":
        verbose = bool(args[1:]) and "verbose".startswith(args[1])
        mode = "verbose" if verbose else "quiet"
        return "".join(_fmt_policy(state, pid, p, 0, mode, 0) for pid, p in state.npol_policies.items())
    out = ["Interfaces with policies configured:\n"]
    for sw_if_index in sorted(state.npol_if):
        conf = state.npol_if[sw_if_index]
        rx_p, tx_p = conf.rx_policies, conf.tx_policies
        head = f"[{state.if_name(sw_if_index)} sw_if_index={sw_if_index} "
        if conf.invert_rx_tx:
            head += "inverted"
            rx_p, tx_p = tx_p, rx_p
        itf = state.interface(sw_if_index)
        if itf is not None:
            a4 = state.effective_addresses(itf, False)
            a6 = state.effective_addresses(itf, True)
            if a4:
                head += f" addr={a4[0].ip}"
            if a6:
                head += f" addr6={a6[0].ip}"
        out.append(head + "]\n")
        if rx_p:
            out.append("  rx:\n")
        out.append(
            f"   rx-policy-default:{conf.policy_default_rx} rx-profile-default:{conf.profile_default_rx} \n"
        )
        for pid in rx_p:
            pol = state.npol_policies.get(pid)
            out.append("    " + _fmt_policy(state, pid, pol, 4, "only_rx", conf.invert_rx_tx))
        if tx_p:
            out.append("  tx:\n")
        out.append(
            f"   tx-policy-default:{conf.policy_default_tx} tx-profile-default:{conf.profile_default_tx} \n"
        )
        for pid in tx_p:
            pol = state.npol_policies.get(pid)
            out.append("    " + _fmt_policy(state, pid, pol, 4, "only_tx", conf.invert_rx_tx))
        if conf.profiles:
            out.append("  profiles:\n")
        for pid in conf.profiles:
            pol = state.npol_policies.get(pid)
            out.append("    " + _fmt_policy(state, pid, pol, 4, "verbose", conf.invert_rx_tx))
    return "".join(out)


# ---------------------------------------------------------------------------------------
# show acl-plugin (acl.c)


def show_acl_plugin(state: VppState, args: list[str]) -> str:
    if not args:
        raise CliError("show acl-plugin: expected acl | interface")
    what = _pick(args[0], ["acl", "interface"])
    if what == "interface":
        out = []
        for idx, itf in state.interfaces.items():
            inputs = state.acl_input.get(idx, [])
            outputs = state.acl_output.get(idx, [])
            if not inputs and not outputs:
                continue
            out.append(f"sw_if_index {idx}:\n")
            if inputs:
                out.append(f"  input acl(s): {', '.join(map(str, inputs))}\n")
            if outputs:
                out.append(f"  output acl(s): {', '.join(map(str, outputs))}\n")
            del itf
        return "".join(out)
    only = U32_MAX
    if len(args) >= 3 and args[1] == "index":
        only = int(args[2])
    out = []
    for acl_index, acl in state.acls.items():
        if only != U32_MAX and acl_index != only:
            continue
        out.append(f"acl-index {acl_index} count {len(acl.rules)} tag {{{acl.tag}}}\n")
        for j, r in enumerate(acl.rules):
            action = {0: "deny", 1: "permit", 2: "permit+reflect"}.get(r.is_permit, f"action {r.is_permit}")
            line = f"  {j:9d}: ipv{r.src.version} {action} src {r.src} dst {r.dst} proto {r.proto}"
            line += f" sport {r.sport_first}" + (f"-{r.sport_last}" if r.sport_first != r.sport_last else "")
            line += f" dport {r.dport_first}" + (f"-{r.dport_last}" if r.dport_first != r.dport_last else "")
            if r.tcp_flags_mask or r.tcp_flags_value:
                line += f" tcpflags {r.tcp_flags_value} mask {r.tcp_flags_mask}"
            out.append(line + "\n")
        inbound = [sw for sw, acls in sorted(state.acl_input.items()) if acl_index in acls]
        outbound = [sw for sw, acls in sorted(state.acl_output.items()) if acl_index in acls]
        out.append(f"  applied inbound on sw_if_index: {', '.join(map(str, inbound))}\n")
        out.append(f"  applied outbound on sw_if_index: {', '.join(map(str, outbound))}\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------
# show ip fib


def _fmt_entry_fib(state: VppState, entry: FibEntry) -> str:
    if entry.kind == "drop":
        return f"  [@0]: dpo-drop ip{entry.prefix.version}"
    if entry.kind == "cnat-vip":
        return "  [@0]: cnat-client (exclusive, parent dpo-drop)"
    lines = []
    for i, p in enumerate(entry.paths):
        if p.type == 1:
            lines.append(f"  [@{i}]: dpo-receive: {p.nh} on {state.if_name(p.sw_if_index)}")
        elif p.type == 2:
            lines.append(f"  [@{i}]: dpo-drop ip{entry.prefix.version}")
        elif p.sw_if_index != U32_MAX:
            via = f"via {p.nh} " if p.nh is not None else "attached "
            lines.append(
                f"  [@{i}]: {via}{state.if_name(p.sw_if_index)} weight:{p.weight} pref:{p.preference}"
            )
        else:
            lines.append(f"  [@{i}]: recursive via {p.nh or 'deag'} in table {p.table_id}")
    if entry.kind == "local" and not entry.paths:
        lines.append("  [@0]: dpo-receive")
    return "\n".join(lines)


def show_ip_fib(state: VppState, args: list[str], is_ip6: bool = False) -> str:
    table_filter: int | None = None
    prefix_filter = None
    i = 0
    while i < len(args):
        if args[i] == "table" and i + 1 < len(args):
            table_filter = int(args[i + 1])
            i += 2
            continue
        prefix_filter = ip_network(args[i], strict=False)
        i += 1
    out = []
    for (t_ip6, table_id), table in sorted(state.tables.items(), key=lambda kv: (kv[0][0], kv[1].fib_index)):
        if t_ip6 != is_ip6 or (table_filter is not None and table_id != table_filter):
            continue
        fam = "ipv6" if is_ip6 else "ipv4"
        out.append(
            f"{fam}-VRF:{table_id}, fib_index:{table.fib_index},"
            " flow hash:[src dst sport dport proto flowlabel ] epoch:0 flags:none"
            f" locks:[{'API:1, ' if table.api_locked and table_id else ''}default-route:1, ]\n"
        )
        entries = state.fib_entries(table)
        for prefix in sorted(entries, key=lambda p: (int(p.network_address), p.prefixlen)):
            if prefix_filter is not None and not (
                prefix_filter.version == prefix.version
                and prefix_filter.network_address in prefix
                and prefix_filter.prefixlen >= prefix.prefixlen
            ):
                continue
            entry = entries[prefix]
            out.append(f"{prefix}\n  unicast-ip{prefix.version}-chain  src:{entry.source}\n")
            out.append(_fmt_entry_fib(state, entry) + "\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------
# show cnat (cnat_translation.c, cnat_session.c, cnat_snat_policy.c)


def show_cnat(state: VppState, args: list[str]) -> str:
    if not args:
        raise CliError("show cnat: expected translation | session | snat-policy")
    what = _pick(args[0], ["translation", "session", "snat-policy"])
    out: list[str] = []
    if what == "translation":
        for tid, tr in state.translations.items():
            vip_addr = state.endpoint_address(tr.vip)
            if tr.vip.sw_if_index == U32_MAX:
                vip = f"{vip_addr};{tr.vip.port}"
            else:
                family = "ip6" if tr.vip.if_af else "ip4"
                vip = f"{state.if_name(tr.vip.sw_if_index)} ({vip_addr or family});{tr.vip.port}"
            lb = "maglev" if tr.lb_type == 1 else "default"
            out.append(f"[{tid}] {vip} {_proto(tr.proto).upper()} lb:{lb} fhc:0x9f(default)\n")
            for p in tr.paths:
                src = state.endpoint_address(p.src)
                dst = state.endpoint_address(p.dst)
                out.append(f"  {src};{p.src.port}->{dst};{p.dst.port}\n")
        return "".join(out)
    if what == "session":
        out.append("=== cnat sessions ===\n")
        for (table_id, tup), session in sorted(state.cnat_sessions.items(), key=lambda kv: kv[1].index):
            kind = "return" if session.is_return else "forward"
            flow = session.flow
            verdict = "drop" if (flow.input_drop or flow.output_drop) else "forward"
            out.append(
                f"[{session.index}] table {table_id} {tup} [{kind}] npol rx:{flow.npol_rx or '-'}"
                f" tx:{flow.npol_tx or '-'} -> {verdict}\n"
            )
        return "".join(out)
    for fwd, entry in sorted(state.snat.items()):
        names = {0: "none", 1: "if-pfx", 2: "k8s", 3: "dnat", 4: "dnat-only"}
        out.append(
            f"fwd fib {fwd}: ip4 {entry.snat_ip4} ip6 {entry.snat_ip6}"
            f" policy {names.get(entry.policy, entry.policy)}\n"
        )
        for pfx in sorted(entry.exclude, key=str):
            out.append(f"  exclude {pfx}\n")
        for table, members in sorted(entry.if_maps.items()):
            label = {0: "include-v4", 1: "include-v6", 2: "k8s", 3: "host"}.get(table, str(table))
            out.append(f"  {label}: {', '.join(state.if_name(m) for m in sorted(members))}\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------
# probe


PROBE_USAGE = (
    "usage: probe from <ip> to <ip> proto <name|number> [sport <N>] [dport <N>]"
    " [icmp-type <T> [icmp-code <C>]] [icmp-id <N>] [rx <sw_if_index|name>] [new-flow]"
)


def probe(state: VppState, args: list[str]) -> str:
    """Judge one packet with packet.evaluate; the reply starts with allow or deny."""
    opts: dict[str, str] = {}
    new_flow = False
    i = 0
    while i < len(args):
        word = args[i]
        if word == "new-flow":
            new_flow = True
            i += 1
            continue
        if word not in ("from", "to", "proto", "sport", "dport", "icmp-type", "icmp-code", "icmp-id", "rx"):
            raise CliError(f"probe: unknown input `{word}'\n{PROBE_USAGE}")
        if i + 1 >= len(args):
            raise CliError(f"probe: {word} needs a value\n{PROBE_USAGE}")
        opts[word] = args[i + 1]
        i += 2
    for required in ("from", "to", "proto"):
        if required not in opts:
            raise CliError(f"probe: missing {required}\n{PROBE_USAGE}")
    try:
        pkt = Packet(
            src=ip_address(opts["from"]),
            dst=ip_address(opts["to"]),
            proto=parse_proto(opts["proto"]),
            sport=int(opts.get("sport", "0")),
            dport=int(opts.get("dport", "0")),
            icmp_type=int(opts["icmp-type"]) if "icmp-type" in opts else None,
            icmp_code=int(opts.get("icmp-code", "0")),
            icmp_id=int(opts.get("icmp-id", "0")),
        )
    except ValueError as exc:
        raise CliError(f"probe: {exc}\n{PROBE_USAGE}") from exc
    rx: int | None = None
    if "rx" in opts:
        value = opts["rx"]
        if value.isdigit():
            rx = int(value)
        else:
            matches = [idx for idx, itf in state.interfaces.items() if itf.name == value]
            if not matches:
                raise CliError(f"probe: no interface named {value}")
            rx = matches[0]
    verdict, trace = evaluate(state, pkt, rx, use_sessions=not new_flow)
    return verdict + "\n" + "".join(f"  {line}\n" for line in trace)


# ---------------------------------------------------------------------------------------
# Dispatch


def _pick(word: str, choices: list[str]) -> str:
    found = [c for c in choices if c.startswith(word)]
    exact = [c for c in found if c == word]
    if exact:
        return exact[0]
    if len(found) != 1:
        raise CliError(f"unknown input `{word}'")
    return found[0]


def _show(state: VppState, args: list[str]) -> str:
    if not args:
        raise CliError("show: expected a subcommand")
    table: dict[str, Command] = {
        "version": show_version,
        "interface": show_interface,
        "npol": show_npol,
        "acl-plugin": show_acl_plugin,
        "ip": lambda s, a: _show_ip(s, a, False),
        "ip6": lambda s, a: _show_ip(s, a, True),
        "cnat": show_cnat,
    }
    word = args[0]
    name = word if word in table else _pick(word, [k for k in table if k != "ip6"])
    return table[name](state, args[1:])


def _show_ip(state: VppState, args: list[str], is_ip6: bool) -> str:
    if not args or _pick(args[0], ["fib"]) != "fib":
        raise CliError("show ip: expected fib")
    return show_ip_fib(state, args[1:], is_ip6)


def run_cli(state: VppState, command: str) -> str:
    """Run one CLI command and return its output (errors as text, like VPP's CLI)."""
    words = command.split()
    if not words:
        return ""
    try:
        verb = _pick(words[0], ["show", "probe"])
        if verb == "probe":
            return probe(state, words[1:])
        return _show(state, words[1:])
    except CliError as exc:
        text = str(exc)
        if text.startswith("unknown input"):
            return f"unknown input `{command.strip()}'\n"
        return text + "\n"
    except (ValueError, IndexError) as exc:
        return f"{command.strip()}: {exc}\n"


__all__ = ["fmt_rule", "probe", "run_cli"]
