"""The algorithm interface the round loop drives without knowing which algorithm it runs.

A round `k` (k >= 1 trains; k = 0 is an optional set-up exchange) has `phases(k)` exchange
phases. In each phase the loop asks `outgoing(k, p)` for the messages to send (peer -> Payload),
delivers them, waits for exactly one message from every peer in `expected(k, p)`, and hands them
to `incoming(k, p, msgs)`. Local training happens in `local_step(k)`, called once before the
round's first phase (k >= 1). What to evaluate is `predict(x)`. The loop never looks inside a
payload, so adding an algorithm never touches it.

Adding an algorithm: one module (under `node/algorithms/`, found on import, or any module named
in MCEPL_PLUGINS) with an `Algorithm` subclass carrying `name` and a `Params` dataclass, and the
one registration line `@register_algorithm` above the class.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

from mcepl.node.data.shard import Shard
from mcepl.node.models import MaskedModel
from mcepl.protocol.payload import Payload
from mcepl.registry import ALGORITHMS
from mcepl.topology import Topology


@dataclass
class NodeContext:
    """Everything a node's algorithm may use: its identity, its data, the shared model."""

    node_id: int
    topology: Topology
    shard: Shard
    model: MaskedModel  # shared fixed weights w (identical on every node)
    total_rounds: int
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def neighbors(self) -> list[int]:
        return self.topology.neighbors(self.node_id)

    @property
    def retention(self) -> float:
        return self.topology.node(self.node_id).retention

    def generator(self, purpose: int = 0) -> torch.Generator:
        """A CPU generator private to this node (and purpose), seeded from the run seed."""
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.node_id * 7919 + purpose * 104_729) % 2**63)
        return g


class MinibatchSampler:
    """Epoch-wise shuffled minibatches from this node's shard, from the node's own generator."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        if n <= 0:
            raise ValueError("this node's training shard is empty")
        self.n, self.batch = n, min(batch_size, n)
        self.gen = generator
        self.perm = torch.randperm(n, generator=generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm.clone(), "pos": self.pos, "gen": self.gen.get_state()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.perm, self.pos = s["perm"].clone(), int(s["pos"])
        self.gen.set_state(s["gen"])


class Algorithm(ABC):
    """One node's side of a decentralized algorithm: what it sends, how it merges."""

    name: ClassVar[str]
    Params: ClassVar[type]  # dataclass of hyper-parameters with the paper's defaults
    # the topology kind (topology.generate) this algorithm needs, e.g. "star" (node 0 is the
    # hub); None: any connected graph. The launcher's default topology asks this.
    required_topology: ClassVar[str | None] = None

    def __init__(self, ctx: NodeContext, params: Any) -> None:
        self.ctx = ctx
        self.params = params

    # --- the exchange schedule -------------------------------------------------------------
    def phases(self, rnd: int) -> int:
        """Exchange phases in round `rnd`; by default none in set-up round 0 and one per round."""
        return 1 if rnd >= 1 else 0

    def expected(self, rnd: int, phase: int) -> list[int]:
        """Peers this node waits for in this phase; by default every neighbour."""
        return self.ctx.neighbors

    def local_step(self, rnd: int) -> None:  # noqa: B027 - optional hook, no-op by default
        """Local computation of round `rnd` >= 1 (e.g. one minibatch), before any exchange."""

    def outgoing(self, rnd: int, phase: int) -> dict[int, Payload]:
        """What goes to which peer in this phase (by default nothing: a method that talks to
        nobody also declares no phases)."""
        return {}

    def check(self, rnd: int, phase: int, sender: int,  # noqa: B027 - optional hook
              payload: Payload) -> None:
        """Raise ValueError if `payload` is not what this algorithm can merge (wrong layers,
        shapes, dtypes or kind). The loop drops and counts such messages; it never crashes."""

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        """Merge what the peers sent (exactly one message from each expected peer)."""
        return None

    # --- evaluation and reporting ----------------------------------------------------------
    @abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the model this node evaluates (its personalised model)."""

    def stats(self) -> dict[str, float]:
        """Extra per-round numbers for the metrics (train loss, density, ...)."""
        return {}

    # --- checkpointing ---------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically after a restart."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # --- helpers for implementations --------------------------------------------------------
    def broadcast(self, payload: Payload) -> dict[int, Payload]:
        return {j: payload for j in self.ctx.neighbors}


A = TypeVar("A", bound=type[Algorithm])


def register_algorithm(cls: A) -> A:
    """Class decorator, the one registration line of an algorithm: makes `cls` the algorithm
    `cls.name` for the config (`algorithm.name`), the drivers and the CLI."""
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"@register_algorithm: {cls!r} is not an Algorithm subclass")
    if not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"@register_algorithm: {cls.__qualname__} has no `name` string")
    if not dataclasses.is_dataclass(getattr(cls, "Params", None)):
        raise TypeError(f"@register_algorithm: {cls.__qualname__}.Params is not a dataclass")
    return ALGORITHMS.add(cls.name, cls)


def expect_tensors(payload: Payload, kind: str,
                   spec: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    """Check a received payload has exactly the expected kind, names, shapes and dtypes."""
    if payload.kind != kind:
        raise ValueError(f"payload kind {payload.kind!r}, expected {kind!r}")
    if list(payload.tensors) != list(spec):
        raise ValueError(f"payload tensors {list(payload.tensors)}, expected {list(spec)}")
    for name, (shape, dtype) in spec.items():
        t = payload.tensors[name]
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise ValueError(f"tensor {name!r} is {t.dtype} {tuple(t.shape)}, "
                             f"expected {dtype} {tuple(shape)}")
