"""CallPulse: shared settings, logging and the command-line entry point."""

__version__ = "0.1.0"
