"""Algorithm registry: `algorithm.name` in the config picks a class from here.

Adding an algorithm = one module with an `Algorithm` subclass + one line below.
"""

from __future__ import annotations

from mcepl.node.algorithms.base import Algorithm, MinibatchSampler, NodeContext
from mcepl.node.algorithms.dispfl import DisPFL
from mcepl.node.algorithms.dsgd import DSGD, DSGDProx
from mcepl.node.algorithms.fedavg import FedAvg
from mcepl.node.algorithms.lottery import LotteryDSGD
from mcepl.node.algorithms.mcepl import MCEPL, IndMask
from mcepl.node.algorithms.weipru import AvrWeiPru, IndWeiPru, ParWeiPru

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (MCEPL, IndMask)}

# the baselines (weight-based; shared machinery in weights.py)
BASELINES: tuple[type[Algorithm], ...] = (DSGD, FedAvg, DSGDProx, LotteryDSGD, IndWeiPru,
                                          AvrWeiPru, ParWeiPru, DisPFL)
ALGORITHMS.update({cls.name: cls for cls in BASELINES})

__all__ = ["ALGORITHMS", "BASELINES", "Algorithm", "MinibatchSampler", "NodeContext", "MCEPL",
           "IndMask", "DSGD", "DSGDProx", "FedAvg", "LotteryDSGD", "IndWeiPru", "AvrWeiPru",
           "ParWeiPru", "DisPFL"]
