"""calico-vpp-driver: Calico Felix's external dataplane driver for FD.io VPP."""

__version__ = "0.1.0"
