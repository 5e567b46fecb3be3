"""rigd's configuration: the settings schema (`schema`), the settings themselves (`settings`), the
inference runtime profiles (`profiles`) and the default paths (`paths`). The names below are the
configuration's public API; everything above the config layer imports them from here."""

from agent.config.schema import ConfigError, Setting, setting, settings, table
from agent.config.settings import (
    CONFIG_ENV,
    CURTAIL_STEPS,
    DEFAULT_CONFIG_PATH,
    ROLES,
    Config,
    HashingConfig,
    TokenGrant,
    config_path,
    describe,
    from_dict,
    is_loopback,
    load,
    parse_address,
    validate,
)

__all__ = [
    "CONFIG_ENV",
    "CURTAIL_STEPS",
    "DEFAULT_CONFIG_PATH",
    "ROLES",
    "Config",
    "ConfigError",
    "HashingConfig",
    "Setting",
    "TokenGrant",
    "config_path",
    "describe",
    "from_dict",
    "is_loopback",
    "load",
    "parse_address",
    "setting",
    "settings",
    "table",
    "validate",
]
