"""Batches that resume exactly: iteration i always gets the same images and augmentation."""
from __future__ import annotations

from typing import Iterator, List

from torch.utils.data import DistributedSampler, Sampler

from ..errors import ConfigError
from ..utils.distributed import DistInfo


class ResumableBatchSampler(Sampler):
    """Batches of dataset keys for iterations ``start_iter .. total_iters - 1``.

    Each epoch is a :class:`DistributedSampler` permutation (seeded by ``seed`` and the epoch,
    this process's shard, incomplete batches dropped); key = ``epoch * len(dataset) + index``,
    so each epoch augments differently and iteration i always gets the same batch: resuming
    at any iteration continues exactly.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, info: DistInfo,
                 start_iter: int, total_iters: int):
        self.sampler = DistributedSampler(range(dataset_len), num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.dataset_len, self.batch_size = dataset_len, batch_size
        self.per_epoch = len(self.sampler) // batch_size
        if self.per_epoch == 0:
            raise ConfigError(f"the training set has {dataset_len} images: too few for batch_size "
                             f"{batch_size} on {info.world_size} process(es)")
        self.start_iter, self.total_iters = start_iter, total_iters

    def __len__(self) -> int:
        return self.total_iters - self.start_iter

    def __iter__(self) -> Iterator[List[int]]:
        iteration = self.start_iter
        while iteration < self.total_iters:
            epoch, offset = divmod(iteration, self.per_epoch)
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)
            for b in range(offset, self.per_epoch):
                if iteration >= self.total_iters:
                    return
                yield [epoch * self.dataset_len + i for i in indices[b * self.batch_size:(b + 1) * self.batch_size]]
                iteration += 1
