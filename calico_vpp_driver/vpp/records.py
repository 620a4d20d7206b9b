"""Records of VPP objects the driver owns where VPP cannot list them (npol objects, routes,
cnat settings): small JSON documents under `VPPStateDir`, tagged with the identity of the VPP
instance they describe (`VppClient.instance_id`), so that a record of a VPP that has since
restarted (its objects are gone) is never taken for the current one."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import structlog

log = structlog.get_logger("calico_vpp_driver.vpp.records")


def read_record(path: str, instance_id: str | None, what: str) -> dict[str, Any] | None:
    """The record at `path` if it describes VPP instance `instance_id`; None if there is none,
    it cannot be read (logged as `<what>_record_unreadable`) or it is another VPP's."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error(f"{what}_record_unreadable", path=path, error=str(exc))
        return None
    if not isinstance(data, dict):
        log.error(f"{what}_record_unreadable", path=path, error="not a JSON object")
        return None
    if data.get("vpp_instance") != instance_id:
        log.info(f"{what}_record_of_another_vpp", path=path, detail="VPP restarted: its objects are gone")
        return None
    return data


def write_record(path: str, instance_id: str | None, content: Mapping[str, Any]) -> None:
    """Replace the record at `path` atomically (a crash leaves the old one or the new one).
    Raises OSError."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"vpp_instance": instance_id, **content}, f)
    os.replace(tmp, path)
