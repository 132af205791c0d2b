"""The VM tier: the QEMU harness is not built yet (issue 4)."""
import pytest


def test_vm_tier():
    pytest.skip("vm tier not run: the QEMU kernel matrix is not built yet (issue 4), "
                "so the kernel tier is untested")
