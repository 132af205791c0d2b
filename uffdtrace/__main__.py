from uffdtrace.cli import main

raise SystemExit(main())
