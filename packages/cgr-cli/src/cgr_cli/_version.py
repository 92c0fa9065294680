"""cgr-cli's version: the one place it is written (hatch reads it for the wheel).

A literal, not ``importlib.metadata``: reading the installed distribution's metadata costs
tens of milliseconds on every start (``cgr --version`` is meant to be instant).
"""

__version__ = "0.1.0"
