"""The ``microforge`` command line."""
