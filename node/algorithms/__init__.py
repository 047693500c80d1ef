"""The algorithms: every module of this package is imported here, and each registers its
classes in `mcepl.registry.ALGORITHMS` with `@register_algorithm` (the config's `algorithm.name`
picks one from there).

Adding an algorithm = one module in this folder with an `Algorithm` subclass and the one line
`@register_algorithm` above it; nothing here changes (modules are found by `pkgutil`). An
algorithm that lives outside the package is loaded through MCEPL_PLUGINS (mcepl.node.plugins).
"""

from __future__ import annotations

import importlib
import pkgutil

from mcepl.node.algorithms.base import (
    Algorithm,
    MinibatchSampler,
    NodeContext,
    register_algorithm,
)
from mcepl.node.algorithms.dispfl import DisPFL
from mcepl.node.algorithms.dsgd import DSGD, DSGDProx
from mcepl.node.algorithms.fedavg import FedAvg
from mcepl.node.algorithms.lottery import LotteryDSGD
from mcepl.node.algorithms.mcepl import MCEPL, IndMask
from mcepl.node.algorithms.weipru import AvrWeiPru, IndWeiPru, ParWeiPru
from mcepl.registry import ALGORITHMS

# every other module of the package registers itself on import (a new algorithm needs no line
# here); the explicit imports above are re-exports for callers that name the classes
for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

# the paper's baselines (weight-based; shared machinery in weights.py), for tests and benchmarks
BASELINES: tuple[type[Algorithm], ...] = (DSGD, FedAvg, DSGDProx, LotteryDSGD, IndWeiPru,
                                          AvrWeiPru, ParWeiPru, DisPFL)

__all__ = ["ALGORITHMS", "BASELINES", "Algorithm", "MinibatchSampler", "NodeContext", "MCEPL",
           "IndMask", "DSGD", "DSGDProx", "FedAvg", "LotteryDSGD", "IndWeiPru", "AvrWeiPru",
           "ParWeiPru", "DisPFL", "register_algorithm"]
