# The two commands in README.md.  Both set everything up first (idempotent).
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

# Main job: uffdtrace on the built-in `mixed` demo workload.
demo: setup
	bash scripts/demo.sh

# Every test tier; a tier that cannot run here is skipped with its reason.
test: setup
	.venv/bin/python -m pytest
