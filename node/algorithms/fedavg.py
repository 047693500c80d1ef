"""fedavg (McMahan et al.) on a star: node 0 is the server, every other node a client.

The server is a node role, not a separate system. To keep the data split identical to the other
methods (N shards for N topology nodes), the hub also holds a shard and trains like a client; it
is simply the one that averages. Round k >= 1:

- local step: every node (hub included) takes `local_steps` SGD steps from the global model;
- phase 0: every client sends its model and its training sample count (`n_samples`, int64 [1])
  to the hub; the hub sends nothing, clients expect nothing;
- the hub averages all N models, its own included, weighted by sample count;
- phase 1: the hub sends the average to every client, which adopts it.

Everyone evaluates the global model. A topology that is not a star centred at node 0 is refused
at construction, naming an edge that does not touch the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mcepl.node.algorithms.base import NodeContext, register_algorithm
from mcepl.node.algorithms.weights import (
    WeightAlgorithm,
    WeightParams,
    check_dense,
    decode_dense,
    dense_payload,
    weighted_sum,
)
from mcepl.protocol.payload import Payload
from mcepl.topology import Topology

HUB = 0
UPLOAD_KIND = "fedavg-update"
COUNT = "n_samples"


@dataclass
class FedAvgParams(WeightParams):
    """lr: the rate the validation search chose on Fashion-MNIST (table1 at c = 3: 0.1 of 0.1,
    0.01, 0.001; the paper's CIFAR-10 choice is 0.01, Table I)."""

    lr: float = 0.1


def check_star(topo: Topology) -> None:
    """ValueError unless every edge touches node 0 (connected => a star centred at 0)."""
    for a, b in topo.edges:
        if HUB not in (a, b):
            raise ValueError(f"fedavg needs a star topology with the server at node {HUB}; "
                             f"node {a} is connected to node {b}")
    if topo.num_nodes > 1 and len(topo.neighbors(HUB)) != topo.num_nodes - 1:
        missing = sorted(set(topo.ids) - {HUB} - set(topo.neighbors(HUB)))
        raise ValueError(f"fedavg needs a star topology with the server at node {HUB}; "
                         f"node {missing[0]} is not connected to it")


def sample_weighted_average(models: list[dict[str, torch.Tensor]],
                            counts: list[int]) -> dict[str, torch.Tensor]:
    """Σ_j n_j x_j / Σ_j n_j (FedAvg's server update)."""
    total = sum(counts)
    if total <= 0:
        raise ValueError("fedavg: the sample counts sum to zero")
    return weighted_sum(models, [c / total for c in counts])


@register_algorithm
class FedAvg(WeightAlgorithm):
    """Clients train, the hub averages by sample count, everyone adopts the average."""

    name = "fedavg"
    Params: ClassVar[type] = FedAvgParams
    required_topology = "star"  # topology.generate("star") puts the hub at node 0 (HUB)

    def __init__(self, ctx: NodeContext, params: FedAvgParams) -> None:
        check_star(ctx.topology)
        super().__init__(ctx, params)
        self.is_hub = ctx.node_id == HUB
        self.n_samples = len(ctx.shard.train_y)

    def phases(self, rnd: int) -> int:
        return 2 if rnd >= 1 else 0

    def expected(self, rnd: int, phase: int) -> list[int]:
        if phase == 0:
            return self.ctx.neighbors if self.is_hub else []
        return [] if self.is_hub else [HUB]

    def outgoing(self, rnd: int, phase: int) -> dict[int, Payload]:
        if phase == 0 and not self.is_hub:
            count = torch.tensor([self.n_samples], dtype=torch.int64)
            return {HUB: dense_payload(self.x, {COUNT: count}, kind=UPLOAD_KIND)}
        if phase == 1 and self.is_hub:
            return self.broadcast(dense_payload(self.x))
        return {}

    def check(self, rnd: int, phase: int, sender: int, payload: Payload) -> None:
        self.check_schedule(rnd, phase, sender)
        if phase == 0:
            check_dense(payload, self.x, kind=UPLOAD_KIND, extra={COUNT: ((1,), torch.int64)})
            if int(payload.tensors[COUNT][0]) <= 0:
                raise ValueError(f"{COUNT} must be positive, got {int(payload.tensors[COUNT][0])}")
        else:
            check_dense(payload, self.x)

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        if phase == 0 and self.is_hub:
            models, counts = [self.x], [self.n_samples]
            for j in sorted(msgs):
                models.append(decode_dense(msgs[j], self.x, self.ctx.device))
                counts.append(int(msgs[j].tensors[COUNT][0]))
            self.x = sample_weighted_average(models, counts)
        elif phase == 1 and not self.is_hub:
            self.x = decode_dense(msgs[HUB], self.x, self.ctx.device)
