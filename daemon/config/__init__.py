"""The daemon's settings: the model (`settings`), the rules of single values (`fields`), what a
reload does (`reload`) and reading them from file, environment and flags (`loading`)."""

from daemon.config.fields import (
    CONFIG_ENV,
    DEFAULT_IMAGE_EXTENSIONS,
    ENV_PREFIX,
    LOG_LEVELS,
    Reload,
    reload_class,
)
from daemon.config.loading import CLI_FLAGS, ConfigError, check_folders, load_settings, read_toml
from daemon.config.reload import LIVE, RESTART_ONLY, restart_only_changes
from daemon.config.settings import DEFAULTS, Settings

__all__ = [
    "CLI_FLAGS",
    "CONFIG_ENV",
    "DEFAULTS",
    "DEFAULT_IMAGE_EXTENSIONS",
    "ENV_PREFIX",
    "LIVE",
    "LOG_LEVELS",
    "RESTART_ONLY",
    "ConfigError",
    "Reload",
    "Settings",
    "check_folders",
    "load_settings",
    "read_toml",
    "reload_class",
    "restart_only_changes",
]
