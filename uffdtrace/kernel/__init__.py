"""Facts about the running kernel, read from the kernel itself (never from a
version number): kallsyms, BTF, tracefs, header trees, and BPF probes."""
