"""Start one Ray worker node on loopback and keep it running until killed (test helper).

``ray start --address=...`` cannot add a node that listens on 127.0.0.1 only with
Ray 2.60: with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (what keeps listeners on
loopback) it refuses to join a cluster, and without it ``--node-ip-address=127.0.0.1``
is rewritten to the machine's address and the node listens on all interfaces.
Ray's own multi-node-on-one-machine test utility (``ray.cluster_utils.Cluster``)
starts worker nodes through ``ray._private.node.Node`` with the node address
given as is; this does the same, as a process of its own, so a test can kill the
whole node (this process's group: raylet, its workers) abruptly.

usage: python ray_worker_node.py GCS_ADDRESS TEMP_DIR NUM_CPUS
"""

import signal
import sys

from ray._private.node import Node
from ray._private.parameter import RayParams


def main() -> None:
    gcs_address, temp_dir, num_cpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
    params = RayParams(
        node_ip_address="127.0.0.1",
        gcs_address=gcs_address,
        num_cpus=num_cpus,
        object_store_memory=100_000_000,
        temp_dir=temp_dir,
        include_dashboard=False,
        min_worker_port=0,
        max_worker_port=0,
    )
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"worker node {node.node_id} raylet pid {node.all_processes['raylet'][0].process.pid}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.pause()


if __name__ == "__main__":
    main()
