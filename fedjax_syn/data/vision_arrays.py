"""A `VisionFederation` (ragged numpy, per client) as padded device arrays (`Federation`).

Each client's train, val and test examples are concatenated into one padded array with role masks,
so training and the client's own evaluation read the same buffer. The global test set and the new
client's data are shared by all clients (one copy, broadcast).
Settings: val, seen (own test split), global (official test set), missing_class (official test
images of the client's missing classes), new_client (all data of the held-out client).
"""

import numpy as np

from fedjax_syn.core.arrays import (
    ClientData,
    EvalGroup,
    Federation,
    pad_clients,
    stack_padded,
    to_device,
)
from fedjax_syn.data.vision_split import VisionFederation

VISION_SETTINGS = ("seen", "global", "missing_class", "new_client")


def vision_arrays(fed: VisionFederation, num_clients: int | None = None) -> Federation:
    """Pads to a common size; `num_clients` > K appends empty clients (e.g. to fill a mesh)."""
    parts = list(zip(fed.train, fed.val, fed.test))
    xs = [np.concatenate([tr[0], va[0], te[0]]) for tr, va, te in parts]
    ys = [np.concatenate([tr[1], va[1], te[1]]) for tr, va, te in parts]
    roles = [np.repeat([0, 1, 2], [len(tr[1]), len(va[1]), len(te[1])]) for tr, va, te in parts]
    x, real = stack_padded(xs)
    y, _ = stack_padded(ys)
    role, _ = stack_padded(roles)
    train, val, test = (real & (role == r) for r in range(3))
    k = len(parts)
    global_x, global_y = fed.global_test
    new_x, new_y = fed.new_client
    tree = {
        "train": ClientData(inputs=x, labels=y.astype(np.int32), mask=train, val_mask=val),
        "local": {"val": val, "seen": test},
        "global": {
            "global": np.ones((k, len(global_y)), bool),
            "missing_class": fed.missing[:, global_y],
        },
        "new": {"new_client": np.ones((k, len(new_y)), bool)},
        "client_mask": np.ones((k,), bool),
    }
    if num_clients is not None and num_clients > k:
        tree = pad_clients(tree, num_clients)
    tree = to_device(tree)
    train_data = tree["train"]
    groups = {
        "local": EvalGroup(train_data.inputs, train_data.labels, tree["local"]),
        "global": EvalGroup(
            *to_device((global_x, global_y.astype(np.int32))), tree["global"], shared=True
        ),
        "new": EvalGroup(*to_device((new_x, new_y.astype(np.int32))), tree["new"], shared=True),
    }
    return Federation(train_data, groups, tree["client_mask"], num_classes=fed.num_classes)
