"""``python -m samdsk_plan`` runs the command-line interface."""

from samdsk_plan.cli.main import main

raise SystemExit(main())
