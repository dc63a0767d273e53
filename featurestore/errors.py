"""The two ways a feature view can fail: a bad declaration, or an event it cannot featurise.

>>> str(FeatureConfigError("features.aggregates[1].half_lives[0]", 'expected durations like "1h", got 5'))
'features.aggregates[1].half_lives[0]: expected durations like "1h", got 5'
>>> FeatureError("feature function m:f failed: ZeroDivisionError: division by zero").reason
'feature_error'
"""

from __future__ import annotations


class FeatureConfigError(ValueError):
    """A feature declaration that cannot be built; the message names the key path.

    ``path`` is relative to where the error was raised (a block constructor says
    ``half_lives[0]``); :meth:`under` prefixes it as the error travels up to the
    file's table (``features.aggregates[1].half_lives[0]``).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason = " ".join(reason.split("\n"))  # one line, whatever the cause's text
        super().__init__(f"{path}: {reason}" if path else reason)

    def under(self, prefix: str) -> FeatureConfigError:
        """The same error with ``prefix`` in front of its path."""
        if not prefix:
            return self
        joined = prefix if not self.path else (f"{prefix}{self.path}" if self.path.startswith("[")
                                               else f"{prefix}.{self.path}")
        return FeatureConfigError(joined, self.reason)


class FeatureError(Exception):
    """An event the view cannot turn into features (a user function raised, a declared type
    does not match the value). The online loop dead-letters the event with ``reason``.
    Not a ``ValueError`` on purpose, so a handler of decoding errors does not swallow it.
    """

    reason = "feature_error"

    def __init__(self, message: str) -> None:
        # one line: dead-letter details and logs are line-oriented
        super().__init__(" ".join(message.split("\n")))
