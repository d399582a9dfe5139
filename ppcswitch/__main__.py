from ppcswitch.cli import main

raise SystemExit(main())
