"""Run the command line: ``python -m llm_budget_window replay ...``."""

from llm_budget_window.cli import main

raise SystemExit(main())
