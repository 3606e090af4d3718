"""scaledb: a declarative experiment-spec compiler with a result database for scaling-law research."""

__version__ = "0.1.0"
