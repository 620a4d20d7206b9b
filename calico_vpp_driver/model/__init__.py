"""The desired state Felix describes, as validated value objects; pure, no I/O."""

from .state import DesiredState, Dirty

__all__ = ["DesiredState", "Dirty"]
