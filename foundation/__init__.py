"""The foundation: what every other package uses and that uses nothing of the project.

Settings from the environment (``settings``), the version (``version``), time in both directions
(``times``), the one bounded memo (``memo``) and secret recognition (``secrets``). A test
(``tests/test_layers.py``) keeps it free of project imports.
"""
