"""Training: the loop, the cascade loss, train modes and their phases, DDP, work dirs."""
from ..errors import TrainingDiverged
from ..utils.distributed import DistInfo, init_distributed
from .loop import TrainSummary, train
from .losses import cascade_loss
from .schedule import TRAIN_MODES, Phase, build_phases, register_train_mode

__all__ = ["TRAIN_MODES", "DistInfo", "Phase", "TrainSummary", "TrainingDiverged", "build_phases", "cascade_loss",
           "init_distributed", "register_train_mode", "train"]
