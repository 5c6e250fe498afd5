"""The bridge's errors; the CLI maps them to exit codes and prints them after `error: `."""


class BridgeError(Exception):
    """Any failure the bridge reports to its caller; `exit_code` is what the process exits with."""

    exit_code = 1


class BadInput(BridgeError):
    """A user-supplied value (request, golden file, flag, ids file) is wrong: exit 2."""

    exit_code = 2


class RunFailed(BridgeError):
    """The model ran but did not give what the capture needs (e.g. a hook that never fired): exit 1."""

    exit_code = 1
