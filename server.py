#!/usr/bin/env python3
"""Start the worldstream server: ``python server.py --help`` lists the flags."""

import sys

from runtime.app import main

if __name__ == "__main__":
    sys.exit(main())
