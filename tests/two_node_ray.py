"""A real two-node Ray cluster on 127.0.0.1, for the node-loss drill; run as a script, driven through its stdin.

``python two_node_ray.py HEAD_CPUS WORKER_CPUS`` starts a head and a second
node (each its own raylet and object store, as on two machines) with Ray's
``ray.cluster_utils.Cluster``, prints ``address HOST:PORT`` and
``worker NODE_ID``, then reads commands: ``kill`` SIGKILLs every process
of the second node (answering ``killed``); end of input stops the cluster.

Why not two ``ray start``: on 127.0.0.1 Ray needs
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (else it swaps the loopback for the
machine's address), and with it ``ray start --address`` refuses to start a
second node ("Multi-node Ray clusters are not supported"); ``Cluster``
starts the node's processes directly and keeps the loopback.
"""

from __future__ import annotations

import os
import sys

from services import LOOPBACK_RAY

os.environ.update(LOOPBACK_RAY)  # before ray is imported: the loopback, the token the drivers share

from ray.cluster_utils import Cluster  # noqa: E402


def main(head_cpus: int, worker_cpus: int) -> None:
    loopback = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False, **loopback})
    try:
        worker = cluster.add_node(num_cpus=worker_cpus, **loopback)
        print(f"address {cluster.address}", flush=True)
        print(f"worker {worker.node_id}", flush=True)
        for line in sys.stdin:
            if line.strip() == "kill":
                cluster.remove_node(worker, allow_graceful=False)  # SIGKILL: a machine gone, nothing said
                print("killed", flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
