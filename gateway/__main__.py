"""`python -m gateway` is `iomt-gateway`."""

import sys

from gateway.cli import main

sys.exit(main())
