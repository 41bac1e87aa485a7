"""`python -m testbed.cli ...`: the same as the `testbed` command."""

from testbed.cli.main import console_main

console_main()
