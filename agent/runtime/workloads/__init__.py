"""What devices run: hashing workers and inference runtimes, each a supervised child process."""


class WorkloadError(Exception):
    """A workload could not start, get ready, drain or stop; the message says why."""
