"""The one exception type for bad user input: the CLI prints its message on one line, exit code 2."""


class UserError(Exception):
    """Bad input (config, argument, data file): the message names the culprit and what was expected."""
