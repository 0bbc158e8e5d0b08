"""The training samples skipped as bad: counted, reported per file, and bounded.

:class:`~mmfish.datasets.keyed.KeyedDataset` skips a sample that cannot be used (a corrupt or
missing image, an unusable box or polygon) and loads another in its place; the training loop
gives the records of the skipped samples to :class:`BadSamples`, which keeps them per file (the
epochs in which each was met, the error), writes the report ``bad_samples.json`` to the work dir
(atomically, whenever a new occurrence is recorded) and says when more distinct files were
skipped than the bound allows. Its state goes into checkpoints, so that a resumed run counts on.
"""

import json
import os.path as osp
from typing import Any, Dict, Iterable, List, Optional

from mmfish.utils.errors import UserInputError, listing
from mmfish.utils.io import write_text_atomically

from .keyed import SkippedSample

REPORT_NAME = 'bad_samples.json'
# The default bound: this fraction of the dataset's samples, at least one.
DEFAULT_FRACTION = 0.001


def default_bound(dataset_size: int) -> int:
    """0.1% of the dataset, at least 1."""
    return max(1, int(dataset_size * DEFAULT_FRACTION))


class TooManyBadSamples(UserInputError):
    """More distinct training samples were bad than ``train_cfg.max_bad_samples`` allows."""


class BadSamples:
    """Skipped samples per file, their report, and the bound.

    Args:
        report_path: Where the JSON report is written (None: not written).
        bound: How many distinct bad files are skipped; one more stops the run.
    """

    def __init__(self, report_path: Optional[str], bound: int) -> None:
        if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
            raise UserInputError(
                f'train_cfg.max_bad_samples must be an integer >= 0 (the number of bad training '
                f'samples to skip before stopping), got {bound!r}'
            )
        self.report_path = report_path
        self.bound = bound
        # file -> dict(index, error, occurrences: sorted list of epochs)
        self.files: Dict[str, Dict[str, Any]] = {}

    def add(self, records: Iterable[SkippedSample]) -> int:
        """Record skipped samples (an occurrence already recorded is not counted twice); the
        report is rewritten when anything is new.

        Returns:
            How many files were not among the bad ones before.
        """
        new_files, new = 0, False
        for record in records:
            if record.file not in self.files:
                self.files[record.file] = dict(index=record.index, error=record.error, epochs=[])
                new_files += 1
            entry = self.files[record.file]
            if record.epoch not in entry['epochs']:
                entry['epochs'] = sorted(entry['epochs'] + [record.epoch])
                entry['error'] = record.error
                new = True
        if new:
            self.write_report()
        return new_files

    @property
    def over_bound(self) -> bool:
        """Whether more distinct files were skipped than the bound allows."""
        return len(self.files) > self.bound

    def write_report(self) -> None:
        if self.report_path is None:
            return
        report = dict(
            skipped_files=len(self.files),
            skipped_samples=sum(len(e['epochs']) for e in self.files.values()),
            bound=self.bound,
            files=self.files,
        )
        write_text_atomically(self.report_path, json.dumps(report, indent=1, sort_keys=True))

    def error(self, checkpoint: Optional[str]) -> TooManyBadSamples:
        """The one-line error of a run stopped by the bound."""
        files = [f'{f} ({e["error"].splitlines()[0][:120]})' for f, e in self.files.items()]
        names = listing(files, 3, 'bad training sample')
        saved = f'checkpoint {osp.basename(checkpoint)} saved; ' if checkpoint else ''
        return TooManyBadSamples(
            f'{names}, more than train_cfg.max_bad_samples={self.bound} allows: stopped '
            f'({saved}per-file report {self.report_path}). Repair or remove those files and '
            'run again with --resume, or raise train_cfg.max_bad_samples'
        )

    def state_dict(self) -> Dict[str, Any]:
        return dict(files={f: dict(e) for f, e in self.files.items()})

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        """The bad files a checkpoint recorded; their report is written again (a resume into a
        new work dir has it too). A run that met none writes no report."""
        if state and state.get('files'):
            self.files = {f: dict(e, epochs=list(e['epochs'])) for f, e in state['files'].items()}
            self.write_report()

    @property
    def names(self) -> List[str]:
        return list(self.files)
