"""Interaction data: the type, the loaders, leave-one-out splitting and partitions."""

from fedrec.core.data.interactions import Interactions
from fedrec.core.data.loaders import DATASETS, load_dataset
from fedrec.core.data.split import LeaveOneOutSplit, leave_one_out

__all__ = ["DATASETS", "Interactions", "LeaveOneOutSplit", "leave_one_out", "load_dataset"]
