"""rigctl's exit codes, the same for every command (the local `rigctl fpga` tools included),
so that scripts across a fleet can branch on them."""

EXIT_OK = 0
EXIT_FAILED = 1  # rigd (or the local tool) refused, or the operation failed
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_UNREACHABLE = 3  # no rigd answered
EXIT_TESTS_FAILED = 4  # diagnostics or a validation found a fault
