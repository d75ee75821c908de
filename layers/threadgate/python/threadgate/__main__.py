from threadgate.cli import main

raise SystemExit(main())
