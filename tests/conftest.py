"""Suite-wide collection order: slow tests first.

Under two xdist workers (``make test``) a minutes-long test that starts last
leaves one core idle while it runs; started first, the short tests fill the
other core around it. Within each kind the collected order is kept.
"""


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
