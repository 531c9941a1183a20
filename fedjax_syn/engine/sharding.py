"""Putting the clients axis on a device mesh.

Client data and client states are sharded along their leading axis over a 1-D mesh named
`clients`; server state and inputs shared by all clients are replicated. `jit` partitions the round
(GSPMD) and the server's reductions over clients become all-reduces. The number of clients must be a
multiple of the number of devices: pad with empty clients (`arrays.pad_clients`), which never count.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from fedjax_syn.core.arrays import EvalGroup, Federation
from fedjax_syn.core.errors import check


def client_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    num_devices = jax.device_count() if num_devices is None else num_devices
    return jax.make_mesh((num_devices,), ("clients",), axis_types=(AxisType.Auto,))


def shard_clients(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Every leaf split along its leading (clients) axis."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("clients")))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_federation(fed: Federation, mesh: jax.sharding.Mesh) -> Federation:
    devices = int(np.prod(mesh.devices.shape))
    check(
        fed.num_clients % devices == 0,
        f"{fed.num_clients} clients cannot be split over {devices} devices; pad the clients axis "
        "to a multiple of the device count",
    )

    def place(group: EvalGroup) -> EvalGroup:
        if not group.shared:
            return shard_clients(group, mesh)
        return group.replace(
            inputs=replicate(group.inputs, mesh),
            labels=replicate(group.labels, mesh),
            masks=shard_clients(group.masks, mesh),
        )

    return fed.replace(
        train=shard_clients(fed.train, mesh),
        eval_groups={name: place(g) for name, g in fed.eval_groups.items()},
        client_mask=shard_clients(fed.client_mask, mesh),
    )
