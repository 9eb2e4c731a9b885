"""One error tree for everything leadercron raises on purpose.

``LeadercronError``
 ├── ``ConfigError``            bad configuration, URL, option or job reference (exit code 2)
 │    └── ``MissingExtraError`` a backend's client library is not installed
 └── ``BackendError``           the election backend failed
      └── ``BackendUnavailable`` unreachable, timed out, refused, or answered nonsense:
           │                      retry later; never means "someone else leads"
           └── ``BackendAuthError`` the backend refused our credentials

Losing a race is never an exception: backends return ``None`` for it.
"""

from __future__ import annotations


class LeadercronError(Exception):
    """Base class of every error leadercron raises on purpose."""


class ConfigError(LeadercronError):
    """Invalid configuration. The message is one line, fit for a terminal."""


class MissingExtraError(ConfigError):
    """The client library of a backend is missing; the message names the extra to install."""


class BackendError(LeadercronError):
    """The election backend failed."""


class BackendUnavailable(BackendError):
    """The backend could not be reached or did not answer in time. Callers retry."""


class BackendAuthError(BackendUnavailable):
    """The backend rejected our credentials. Retried like any outage, but logged as such."""
