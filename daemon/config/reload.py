"""What SIGHUP does with the settings: the fields marked live are applied, the restart-only ones
keep their running value and are named in a warning (the marks live in each field)."""

from daemon.config.fields import reload_class
from daemon.config.settings import Settings

LIVE: frozenset[str] = frozenset(
    name for name, field in Settings.model_fields.items() if reload_class(field) == "live"
)
RESTART_ONLY: frozenset[str] = frozenset(
    name for name, field in Settings.model_fields.items() if reload_class(field) == "restart"
)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The restart-only settings whose value differs, in declaration order: what a reload must
    keep at the running value and name in its warning."""
    return [
        name
        for name in Settings.model_fields
        if name in RESTART_ONLY and getattr(old, name) != getattr(new, name)
    ]
