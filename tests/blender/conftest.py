"""Markers of the Blender tests."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes a minute or more (deselect with -m 'not slow')")
