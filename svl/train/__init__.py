"""Training engine: MTA losses, the generic resumable Trainer, schedules, samplers, DDP helpers,
run folders. The jobs that use it live in svl.tasks (one file each).
"""

from svl.train.losses import TripleAlignment, clip_loss
from svl.train.run_dir import RunDirInUseError, claim_run_dir
from svl.train.sampler import KNNGroupedBatchSampler, ResumableBatchSampler, ResumableSampler
from svl.train.schedule import StepDecayLR, WarmupCosineLR, warmup_cosine
from svl.train.trainer import TrainConfig, Trainer, TrainingInterrupted, build_optimizer, build_scheduler

__all__ = [
    "KNNGroupedBatchSampler",
    "ResumableBatchSampler",
    "ResumableSampler",
    "StepDecayLR",
    "RunDirInUseError",
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "claim_run_dir",
    "TripleAlignment",
    "WarmupCosineLR",
    "clip_loss",
    "warmup_cosine",
]
