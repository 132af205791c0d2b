"""The page-state reader on the guest kernel (6.12, 7.3): the host's live
tests and BTF checks, run unchanged inside the guest.

Layouts differ between these kernels (task_struct.mm, vm_area_struct, the
folio's mapcounts, compound_head vs compound_info, the swap types) and the
guests randomize the direct map and vmemmap (KASLR): the same tests passing
here is the proof that the BTF-derived constants and the calibration follow
the kernel.  Imported names are collected as this module's own tests."""
from tests.live.test_pagestate import *  # noqa: F401,F403
from tests.unit.test_btf import (  # noqa: F401
    test_folio_overlays_page_as_the_kernel_asserts,
    test_pg_anon_exclusive_is_an_alias_of_another_page_flag,
    test_tracepoint_records_agree_with_btf,
    vmlinux,
)
