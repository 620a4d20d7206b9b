"""The boundary between the desired-state model and whatever programs the dataplane.

The apply loop calls `Dataplane.apply` once per batch after Felix's InSync,
with the changes since the previous call; the dataplane reports each
endpoint's programming result on the `StatusBoard`, which is what turns an
endpoint's status to "up" (or "error"). Until a dataplane reports an endpoint,
the endpoint is "down".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog

from .config import Config
from .felix.status import StatusBoard
from .model.state import DesiredState, Dirty

log = structlog.get_logger("calico_vpp_driver.dataplane")


class Dataplane(Protocol):
    """What the apply loop needs from a dataplane implementation."""

    name: str

    def apply(self, state: DesiredState, dirty: Dirty, board: StatusBoard) -> None:
        """Make the dataplane match `state`; `dirty` says what changed.

        Called only once `state.in_sync` is true, so deleting what the model
        no longer holds is allowed. Must not raise for one bad object: report
        it on the board as ERROR and go on.
        """

    def configure(self, cfg: Config) -> None:
        """Felix's configuration arrived or changed (called before the first apply)."""

    def new_felix_session(self) -> None:
        """A new Felix connection starts: the next apply after its InSync is a full resync."""

    def set_waker(self, wake: Callable[[], None]) -> None:
        """`wake()` brings the apply loop round at once; the dataplane calls it (from any thread)
        when work of its own arrives (a pod interface created through CNI)."""

    def wants_apply(self) -> bool:
        """True when the dataplane has work of its own (a retry, something it waits for): the
        loop then applies even though Felix sent nothing."""

    def close(self) -> None:
        """The driver is stopping. Leave programmed state in place."""


class ModelOnlyDataplane:
    """Programs nothing: the model is kept and statuses reported, no VPP is touched.

    For tests of the Felix side (`CALICO_VPP_DATAPLANE=model-only`); it reports
    nothing, so every endpoint is honestly "down".
    """

    name = "model-only"

    def __init__(self) -> None:
        self._warned = False

    def apply(self, state: DesiredState, dirty: Dirty, board: StatusBoard) -> None:
        if not self._warned:
            log.warning(
                "dataplane_not_programmed",
                dataplane=self.name,
                detail="CALICO_VPP_DATAPLANE=model-only: Felix's desired state is kept, no VPP is "
                "programmed; endpoints stay 'down'",
            )
            self._warned = True

    def configure(self, cfg: Config) -> None:
        pass

    def new_felix_session(self) -> None:
        pass

    def set_waker(self, wake: Callable[[], None]) -> None:
        pass

    def wants_apply(self) -> bool:
        return False

    def close(self) -> None:
        pass
