"""Run under torchrun by test_train.py: train a few iterations, then save this rank's weights."""
import os
import sys

import torch

from sparse_lc import load_config
from sparse_lc.training import train

if __name__ == "__main__":
    config, work_dir = sys.argv[1], sys.argv[2]
    cfg = load_config(config, [f"work_dir={work_dir}"])
    summary = train(cfg, device="cpu", progress=False)
    torch.save(summary.model.state_dict(), os.path.join(work_dir, f"rank{os.environ['RANK']}.pth"))
