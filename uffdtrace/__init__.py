"""uffdtrace: eBPF tracing and diagnostics for Linux UFFDIO_MOVE."""

__version__ = "0.1.0"
