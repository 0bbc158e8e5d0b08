"""Writing a file or a directory atomically: readers see the old content or the new, never part.

Everything mmfish writes for a user to find later is written the same way: first to a hidden
temporary sibling of the destination (:func:`temporary_path`, marked :data:`TMP_MARK`, so that
what a crash leaves behind can be found and removed), then flushed to disk and renamed into
place (:func:`replace_durably`); a rename within a directory is atomic on POSIX file systems.
:func:`atomic_path` does both around the caller's writing and removes the temporary on an error;
:func:`write_text_atomically` is that for a text file. The converter's output, the fault-tolerant
checkpoints and ``last_checkpoint``, and the shapes dataset are written this way.
"""

import os
import os.path as osp
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

TMP_MARK = '.tmp-mmfish-'


def temporary_path(path: str) -> str:
    """The hidden temporary sibling of ``path`` that this process writes before renaming it."""
    path = osp.abspath(path)
    return osp.join(osp.dirname(path), f'{TMP_MARK}{osp.basename(path)}.{os.getpid()}')


def fsync_path(path: str) -> None:
    """Flush a file's or a directory's content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp_path: str, path: str) -> None:
    """Make a fully written ``tmp_path`` durable, then rename it to ``path`` (atomic).

    A directory replaces whatever is at ``path`` too: the old one is first moved aside (into a
    hidden sibling), then removed once the new one is in place.
    """
    fsync_path(tmp_path)
    if osp.isdir(tmp_path) and osp.lexists(path):
        parent, name = osp.split(osp.abspath(path))
        trash_dir = tempfile.mkdtemp(dir=parent, prefix=f'{TMP_MARK}{name}.old-')
        os.rename(path, osp.join(trash_dir, name))
        os.rename(tmp_path, path)
        shutil.rmtree(trash_dir, ignore_errors=True)
    else:
        os.replace(tmp_path, path)
    fsync_path(osp.dirname(osp.abspath(path)))


def _remove(path: str) -> None:
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif osp.lexists(path):
        os.remove(path)


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Write ``path`` atomically: yields the temporary path to write (a file or a directory).

    When the block ends normally, what was written there replaces ``path``
    (:func:`replace_durably`); on an error it is removed and ``path`` is left as it was. The
    parent directory is created if needed; a leftover temporary of this process is removed first.

    Example::

        with atomic_path('checkpoints/x.pth') as tmp:
            torch.save(obj, tmp)
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp_path = temporary_path(path)
    _remove(tmp_path)
    try:
        yield tmp_path
        replace_durably(tmp_path, path)
    except BaseException:
        _remove(tmp_path)
        raise


def write_text_atomically(path: str, text: str) -> None:
    """Replace the file ``path`` by ``text``: readers see the old content or the new, never less."""
    with atomic_path(path) as tmp_path, open(tmp_path, 'w') as f:
        f.write(text)


__all__ = [
    'TMP_MARK',
    'atomic_path',
    'fsync_path',
    'replace_durably',
    'temporary_path',
    'write_text_atomically',
]
