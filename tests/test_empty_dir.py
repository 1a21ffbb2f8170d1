"""The suite's disk clean-up helper (tests/conftest.py uses it)."""
import os

from tests.dropin import empty_dir


def test_empty_dir_keeps_the_dir_and_never_follows_links(tmp_path):
    work, outside = tmp_path / 'work', tmp_path / 'outside'
    (work / 'a' / 'b').mkdir(parents=True)
    (work / 'a' / 'b' / 'epoch_1.pth').write_bytes(b'x' * 1000)
    (work / 'last_checkpoint').write_text('a/b/epoch_1.pth')
    outside.mkdir()
    (outside / 'keep.txt').write_text('kept')
    os.symlink(outside, work / 'link')
    empty_dir(work)
    assert work.is_dir() and list(work.iterdir()) == []
    assert (outside / 'keep.txt').read_text() == 'kept'
