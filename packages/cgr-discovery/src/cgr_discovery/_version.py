"""cgr-discovery's version: the one place it is written (hatch reads it for the wheel).

A literal, not ``importlib.metadata``: reading the installed distribution's metadata costs
tens of milliseconds at import, and every ``cgr run`` imports this package.
"""

__version__ = "0.1.0"
