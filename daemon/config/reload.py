"""What SIGHUP does with the settings: the fields marked live are applied, the restart-only ones
keep their running value and are named in a warning (the marks live in each field)."""

import json
from typing import Any

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


def applied_changes(old: Settings, new: Settings) -> list[str]:
    """Each live setting a reload changes, as "name: old -> new" (a key of a table such as
    defaults named as `defaults.iterations`), in declaration order: the log's answer to what the
    reload did (a soak trial's operator saw only the style count)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    changes = []
    for name in Settings.model_fields:
        if name not in LIVE or before[name] == after[name]:
            continue
        was, now = before[name], after[name]
        if isinstance(was, dict) and isinstance(now, dict):
            keys = [key for key in {**was, **now} if was.get(key) != now.get(key)]
            changes += [
                f"{name}.{key}: {_shown(was.get(key))} -> {_shown(now.get(key))}" for key in keys
            ]
        else:
            changes.append(f"{name}: {_shown(was)} -> {_shown(now)}")
    return changes


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
