"""The one base class of errors a user can fix: the CLI prints the message as one line and exits 2."""


class UserError(Exception):
    """Bad input, config or environment; the message names what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config key has a value that cannot work; the message starts with the key."""
