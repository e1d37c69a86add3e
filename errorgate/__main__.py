from errorgate.cli import main

raise SystemExit(main())
