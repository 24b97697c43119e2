"""`ray start` kept on 127.0.0.1, for the tests' clusters.

Ray replaces a loopback `--node-ip-address` or `--address` with the machine's own address (it
does not plan for a cluster on one loopback), and refuses a second node where it would keep
loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). This runs the `ray` command with loopback kept
as it is, and its children (raylet, workers) with that variable, so they keep it too.

Usage: python tests/ray_loopback.py start ... (the arguments of `ray`).
"""

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for the processes Ray starts

import ray._private.ray_constants as ray_constants
import ray._private.services as services
from ray.scripts.scripts import main

ray_constants.ENABLE_RAY_CLUSTER = True  # this process may start a second node ...
services.resolve_ip_for_localhost = lambda host: host  # ... and keeps 127.0.0.1 as given

if __name__ == "__main__":
    sys.argv[0] = "ray"
    sys.exit(main())
