"""Where a checkpoint path points, judged the way mmengine's loader will judge it."""

import os.path as osp


def checkpoint_exists(path: str) -> bool:
    """Whether mmengine's checkpoint loader can be given ``path``.

    A local file counts after ``~`` is expanded, as mmengine's ``load_from_local`` expands it
    (``--resume=~/epoch_12.pth`` reaches the tool unexpanded by the shell). A URL or a scheme such
    as ``open-mmlab://`` or ``s3://`` is left to mmengine, which downloads or reads it.
    """
    return '://' in path or osp.isfile(osp.expanduser(path))
