"""Bad samples: an error that names the file, or a counted, logged skip.

A run that dies hours in on one truncated PNG wastes the compute; a run that
silently drops files trains on a set nobody chose. The datasets here do
neither: by default a sample that cannot be read raises
:class:`BadSampleError` naming the file and what was expected. With
``skip_bad_samples=True`` (training only) the sample is skipped with a
warning that names it and counts the skips so far, and mmengine's
``BaseDataset.__getitem__`` draws another index in its place.

Only faults of the *file* are skipped. When the pipeline fails on a sample,
the image is decoded again on its own; if that works, the failure is not the
file's and the original error is raised, so a bug in a transform is never
hidden behind a skip.
"""
from __future__ import annotations

import logging
from typing import Optional

from mmengine.logging import print_log


class BadSampleError(ValueError):
    """A sample whose file cannot be read or parsed."""


def image_fault(path: str) -> Optional[str]:
    """Why ``path`` is not a decodable image, or ``None`` when it is.

    Decodes the whole file with mmcv (OpenCV), as ``LoadImageFromFile``
    does, so a truncated PNG whose header is intact is caught too.
    """
    import mmcv
    from mmengine import fileio
    try:
        data = fileio.get(path)
    except Exception as e:  # noqa: BLE001 (any I/O error is the file's)
        return f'cannot be read ({type(e).__name__}: {e})'
    try:
        img = mmcv.imfrombytes(data)
    except Exception as e:  # noqa: BLE001
        return f'cannot be decoded ({type(e).__name__}: {e})'
    if img is None or img.size == 0:
        return (f'is not a decodable image ({len(data)} bytes; truncated or '
                'not an image file)')
    return None


class BadSampleMixin:
    """``skip_bad_samples`` for an mmengine dataset (put it first in bases).

    Subclasses call :meth:`_bad_sample` for a fault they find while
    parsing (it raises, or warns and returns so the caller drops the item),
    and get :meth:`prepare_data` that checks the image of a sample whose
    pipeline failed.
    """

    skip_bad_samples: bool = False
    #: Samples skipped so far, by this process (each dataloader worker
    #: counts its own; the warnings say which file).
    num_skipped: int = 0

    def _bad_sample(self, path: str, reason: str,
                    error: type = BadSampleError) -> None:
        """Raise ``error`` for the bad file ``path``, or log and count the
        skip. ``error`` must be a subclass of :class:`BadSampleError`."""
        msg = f'{type(self).__name__}: {path} {reason}'
        if getattr(self, 'test_mode', False):
            raise error(
                msg + ('; skip_bad_samples applies to training only, since '
                       'skipping would change the evaluated set'
                       if self.skip_bad_samples else ''))
        if not self.skip_bad_samples:
            raise error(
                msg + '; set skip_bad_samples=True in the dataset config '
                'to skip such files with a warning')
        self.num_skipped += 1
        print_log(f'{msg}: skipped ({self.num_skipped} bad sample(s) '
                  'skipped so far by this process)',
                  logger='current', level=logging.WARNING)

    def prepare_data(self, idx):
        """The pipeline's output; a bad image raises or is skipped (None)."""
        try:
            return super().prepare_data(idx)
        except BadSampleError:
            raise
        except Exception:
            path = self.get_data_info(idx).get('img_path')
            reason = image_fault(path) if isinstance(path, str) else None
            if reason is None:
                raise  # the file is fine: not a data fault
            # Raises unless skipping; then None makes mmengine draw again.
            self._bad_sample(path, reason)
            return None
