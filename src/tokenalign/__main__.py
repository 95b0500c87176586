"""Allow ``python -m tokenalign``."""

from tokenalign.cli import main

raise SystemExit(main())
