"""Suite-wide hooks: longest and slow tests first; passing tests leave no files.

Under two xdist workers (``make test``) a minutes-long test that starts last
leaves one core idle while it runs; started first, the short tests fill the
other core around it. The three subprocess studies (`_LONGEST`) go before
the other slow tests: otherwise the detection study started 11 minutes in
and ran the last 4 minutes alone. Within each kind the collected order is
kept.

Disk: a passing test's ``tmp_path`` is emptied at its teardown (the
end-to-end tests write checkpoints of ~200 MB; kept, one full run filled
23 GB). A failing test's files stay for debugging.

Visualizers: mmengine keeps one per name and process, and mmdet's configs
all name theirs ``'visualizer'``, so a runner built in one test would write
its config and scalars into an earlier test's (emptied) work dir. Each test
starts with no visualizer instances.
"""
import pytest
from mmengine.visualization import Visualizer

from tests.dropin import empty_dir

#: The longest tests (3 to 4 minutes each on a slow 2-core machine): they
#: start first, or one of them ends the run alone on one worker.
_LONGEST = ('test_detection_study.py', 'test_cls_study.py',
            'test_fault_injection.py')


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: (item.path.name not in _LONGEST,
                                 item.get_closest_marker('slow') is None))


_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == 'call':
        item.stash[_PASSED] = report.passed
    return report


def _forget_visualizers(cls=Visualizer):
    cls._instance_dict.clear()  # each ManagerMixin subclass has its own
    for sub in cls.__subclasses__():
        _forget_visualizers(sub)


@pytest.fixture(autouse=True)
def _isolate_files_and_visualizers(request):
    yield
    _forget_visualizers()
    path = request.node.funcargs.get('tmp_path')
    if path is not None and request.node.stash.get(_PASSED, False):
        empty_dir(path)
