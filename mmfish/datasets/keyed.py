"""Training samples keyed by (seed, epoch, index): augmentation as a pure function of the key, and
bad samples skipped in a deterministic way.

mmcv's and mmdet's transforms draw from numpy's and Python's global generators (mmengine's
``BaseDataset`` too, when it draws another sample in place of one its pipeline dropped); in
data-loading workers those generators belong to the worker, are seeded once when it starts and
run on for as long as it lives. Which augmentation a sample gets therefore depends on the number
of workers, on which worker loads it and, with persistent workers, on everything that worker
loaded before: no checkpoint can hold it. Here every sample is loaded under generators seeded
from its key instead:

- :class:`KeyedBatchSampler` wraps the data loader's batch sampler and turns each index into a
  :class:`SampleKey` ``(seed, epoch, index)``: the sampler's seed and epoch as the main process
  has them when the epoch's iterator is created (so they reach persistent workers with the
  indices, not through a copy of the dataset), and the index. With a sampler that never ends (an
  ``InfiniteSampler``) the epoch is the number of passes over the data before the sample.
- :class:`KeyedDataset` wraps the dataset: given a key it seeds Python's ``random``, numpy's
  global generator and torch's CPU generator from the key (:func:`sample_seeds`), loads the
  sample, and puts the generators back as they were (which matters in the main process, when
  there are no workers). Given a plain index it is the dataset.
- **Bad samples.** A sample whose annotations are unusable
  (:mod:`mmfish.datasets.sample_checks`) or whose loading raises (a corrupt or missing image, an
  annotation the pipeline cannot read) is skipped: another index, drawn from the key and the
  attempt, is loaded in its place, and a :class:`SkippedSample` record travels with the batch to
  the training loop, which counts them (:class:`~mmfish.datasets.bad_samples.BadSamples`).
  :class:`KeyedCollate` wraps the collate function so that a batch comes as ``(batch, records)``.

:func:`keyed_dataloader` builds the data loader of all three from a built one; the training loops
of :mod:`mmfish.engine.runner.loops` use it. The cost is the seeding of three generators a
sample, and in the main process saving and restoring them (tens to hundreds of microseconds:
docs/training.md, "Fault tolerance and resume", gives the figures and their command).
"""

import random
import traceback
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .sample_checks import instance_problems

# How many replacements are tried for one bad sample before giving up.
MAX_ATTEMPTS = 10


class SampleKey(NamedTuple):
    """What a training sample's random draws are a function of.

    ``seed`` None: the sample is loaded with the generators as they are (no seeding), as
    mmengine's data loaders load it.
    """

    seed: Optional[int]
    epoch: int
    index: int


class SkippedSample(NamedTuple):
    """A sample that could not be used, and why (plain values: it crosses process boundaries)."""

    file: str
    index: int
    epoch: int
    error: str


def sample_seeds(key: SampleKey, attempt: int = 0) -> Tuple[int, np.ndarray, int]:
    """The seeds of Python's, numpy's and torch's generators for one key (and attempt)."""
    entropy = [key.seed % 2**64, key.epoch, key.index] + ([attempt] if attempt else [])
    words = np.random.SeedSequence(entropy).generate_state(6, np.uint32)
    python = int(words[0]) << 32 | int(words[1])
    torch_seed = int(words[4]) << 32 | int(words[5])
    return python, words[2:4], torch_seed


class _SeededGenerators:
    """Seeds the global generators for one sample; restores them on exit if ``restore``.

    In a data-loading worker nothing else draws from them, and they are not restored (reading
    and writing numpy's state is most of the cost).
    """

    def __init__(self, key: SampleKey, attempt: int, restore: bool = True) -> None:
        self.key, self.attempt, self.restore = key, attempt, restore

    def __enter__(self) -> None:
        if self.restore:
            self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        python, numpy_seed, torch_seed = sample_seeds(self.key, self.attempt)
        random.seed(python)
        np.random.seed(numpy_seed)
        torch.default_generator.manual_seed(torch_seed)

    def __exit__(self, *exc: Any) -> None:
        if self.restore:
            python, numpy_state, torch_state = self.saved
            random.setstate(python)
            np.random.set_state(numpy_state)
            torch.set_rng_state(torch_state)


class _Unseeded:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: Any) -> None:
        pass


def sample_file(dataset: Any, index: int) -> str:
    """The file a sample is read from (its image, and its label map if any), for reports."""
    try:
        info = dataset.get_data_info(index)
    except Exception:  # noqa: BLE001  (a dataset without data infos, or a broken one)
        return f'sample {index}'
    if not isinstance(info, dict):
        return f'sample {index}'
    files = [info.get(k) for k in ('img_path', 'seg_map_path') if isinstance(info.get(k), str)]
    return ' + '.join(files) or f'sample {index}'


class KeyedDataset(Dataset):
    """A dataset whose items, given a :class:`SampleKey`, are a function of the key alone.

    Other attributes (``metainfo``, ``pipeline``...) are the wrapped dataset's, read and written.

    Args:
        dataset: The dataset to wrap.
        max_attempts: Replacements tried for one bad sample before the load fails.
        skip_self_intersecting: Whether a sample with a self-intersecting polygon is bad too.
    """

    _own = ('dataset', 'max_attempts', 'skip_self_intersecting')

    def __init__(
        self, dataset: Any, max_attempts: int = MAX_ATTEMPTS, skip_self_intersecting: bool = False
    ) -> None:
        object.__setattr__(self, 'dataset', dataset)
        object.__setattr__(self, 'max_attempts', max_attempts)
        object.__setattr__(self, 'skip_self_intersecting', skip_self_intersecting)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name in KeyedDataset._own:  # while unpickling, before __init__'s attributes exist
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.dataset, name, value)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, SampleKey):
            return self.dataset[key]
        skipped: List[SkippedSample] = []
        index = key.index
        in_main_process = get_worker_info() is None
        for attempt in range(self.max_attempts + 1):
            seeded = (
                _Unseeded()
                if key.seed is None
                else _SeededGenerators(key, attempt, restore=in_main_process)
            )
            with seeded:
                try:
                    return self._load(index), skipped
                except Exception as error:  # noqa: BLE001  (any failure of one sample)
                    skipped.append(self._record(index, key.epoch, error))
                    index = self._replacement(key, attempt, index)
        raise RuntimeError(
            f'{len(skipped)} samples in a row could not be loaded: '
            + '; '.join(f'{s.file}: {s.error}' for s in skipped[:3])
        )

    def _load(self, index: int) -> Any:
        info = None
        if hasattr(self.dataset, 'get_data_info'):
            info = self.dataset.get_data_info(index)
        problems = []
        if isinstance(info, dict):
            problems = instance_problems(info.get('instances'), self.skip_self_intersecting)
        if problems:
            raise BadAnnotation('; '.join(problems))
        return self.dataset[index]

    def _record(self, index: int, epoch: int, error: Exception) -> SkippedSample:
        if isinstance(error, BadAnnotation):
            message = str(error)
        else:
            frames = traceback.extract_tb(error.__traceback__)
            where = f' ({frames[-1].filename}:{frames[-1].lineno})' if frames else ''
            message = f'{type(error).__name__}: {error}{where}'
        return SkippedSample(sample_file(self.dataset, index), index, epoch, message[:500])

    def _replacement(self, key: SampleKey, attempt: int, index: int) -> int:
        """Another index in place of a bad one: from the key and the attempt, when seeded."""
        if key.seed is None:
            return int(np.random.randint(len(self)))
        entropy = [key.seed % 2**64, key.epoch, key.index, attempt, 1]
        rng = np.random.default_rng(np.random.SeedSequence(entropy))
        return int(rng.integers(len(self)))


class BadAnnotation(ValueError):
    """A sample's annotations cannot be used (:mod:`mmfish.datasets.sample_checks`)."""


def pass_length(sampler: Any) -> int:
    """How many indices one pass over the data gives this process."""
    num_samples = getattr(sampler, 'num_samples', None)
    if isinstance(num_samples, int) and num_samples > 0:
        return num_samples
    world_size = getattr(sampler, 'world_size', 1) or 1
    return max(1, -(-len(sampler) // world_size))


class KeyedBatchSampler(Sampler):
    """Batches of :class:`SampleKey` in place of indices.

    ``skip_batches``: how many batches an iterator created now leaves out (their indices are
    drawn, their samples not loaded); whoever sets it sets it back to 0 once the data loader's
    iterator is created (which may take several iterators of this sampler).

    Args:
        batch_sampler: The data loader's batch sampler (its ``sampler`` is the index sampler).
        seeded: Keys carry the sampler's seed (else None: no seeding, mmengine's behaviour).
        default_seed: The seed when the sampler has none.
    """

    def __init__(self, batch_sampler: Any, seeded: bool = True, default_seed: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.seeded = seeded
        self.default_seed = default_seed
        self.skip_batches = 0

    @property
    def sampler(self) -> Any:
        """The index sampler (``set_epoch``, ``seed``)."""
        return getattr(self.batch_sampler, 'sampler', None)

    @property
    def batch_size(self) -> Optional[int]:
        return getattr(self.batch_sampler, 'batch_size', None)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[List[SampleKey]]:
        sampler = self.sampler
        seed = getattr(sampler, 'seed', None)
        seed = (self.default_seed if seed is None else int(seed)) if self.seeded else None
        epoch = int(getattr(sampler, 'epoch', 0) or 0)
        per_pass = pass_length(sampler) if sampler is not None else len(self) or 1
        return self._keys(iter(self.batch_sampler), seed, epoch, per_pass, self.skip_batches)

    @staticmethod
    def _keys(batches, seed, epoch, per_pass, skip) -> Iterator[List[SampleKey]]:
        taken = 0
        for n, batch in enumerate(batches):
            keys = [SampleKey(seed, epoch + (taken + i) // per_pass, int(index))
                    for i, index in enumerate(batch)]  # fmt: skip
            taken += len(batch)
            if n >= skip:
                yield keys


class KeyedCollate:
    """A collate function for :class:`KeyedDataset`'s items: ``(batch, skipped samples)``."""

    def __init__(self, collate_fn: Callable[[Sequence[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: Sequence[Any]) -> Tuple[Any, List[SkippedSample]]:
        skipped = [record for _, records in items for record in records]
        return self.collate_fn([data for data, _ in items]), skipped


def keyed_dataloader(
    loader: DataLoader,
    seeded: bool = True,
    default_seed: int = 0,
    skip_self_intersecting: bool = False,
) -> DataLoader:
    """The same data loader, with keyed samples (its batches come as ``(batch, skipped)``).

    Its ``sampler`` and ``batch_size`` are the original loader's index sampler and batch size
    (``DistSamplerSeedHook`` sets the sampler's epoch; the checkpoint records its seed).
    """
    batches = KeyedBatchSampler(loader.batch_sampler, seeded, default_seed)
    workers = loader.num_workers
    generator = loader.generator
    if seeded and generator is None:
        # Creating an iterator draws its workers' base seed; from a generator of its own it
        # leaves the global ones, which the training draws from, alone.
        generator = torch.Generator().manual_seed(default_seed)
    keyed = DataLoader(
        KeyedDataset(loader.dataset, skip_self_intersecting=skip_self_intersecting),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=KeyedCollate(loader.collate_fn),
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=generator,
        prefetch_factor=loader.prefetch_factor if workers > 0 else None,
        persistent_workers=loader.persistent_workers if workers > 0 else False,
        pin_memory_device=loader.pin_memory_device,
    )
    # DataLoader refuses these once built; they only describe the loader (its batches come from
    # the batch sampler), and code that reads them expects the original's.
    object.__setattr__(keyed, 'sampler', batches.sampler or loader.sampler)
    object.__setattr__(keyed, 'batch_size', loader.batch_size)
    return keyed


def is_keyed(loader: Any) -> bool:
    """Whether a data loader was made by :func:`keyed_dataloader`."""
    return isinstance(getattr(loader, 'batch_sampler', None), KeyedBatchSampler)
