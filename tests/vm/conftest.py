"""The VM tier has two sides.  On the host, test_guest_tier.py boots each
kernel of the matrix and runs tests/vm/guest inside; the guest tests are
never collected on the host (they need the guest's kernel).  Inside the
guest (the harness sets UFFDTRACE_IN_GUEST=1) it is the other way round."""
import os

IN_GUEST = os.environ.get("UFFDTRACE_IN_GUEST") == "1"
collect_ignore = ["test_guest_tier.py"] if IN_GUEST else ["guest"]
