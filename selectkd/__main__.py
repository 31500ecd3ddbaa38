"""`python -m selectkd ...` is the `selectkd` command (also under torchrun)."""

from selectkd.cli.main import main

main()
