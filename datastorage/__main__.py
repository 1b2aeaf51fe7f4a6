from datastorage.cli import main

raise SystemExit(main())
