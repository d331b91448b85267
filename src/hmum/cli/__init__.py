"""The ``hmum`` command line; the app is ``hmum.cli.app.app``."""
