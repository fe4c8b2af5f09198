"""Exceptions the CLI turns into one line: bad input (exit code 2) and a diverged training (exit code 3)."""


class UserError(Exception):
    """Bad input (config, argument, data file): the message names the culprit and what was expected."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite and the policy is to stop; the message names the step and the term."""
