"""`python -m calico_vpp_driver` is the `calico-vpp-driver` command."""

import sys

from .cli import main

sys.exit(main())
