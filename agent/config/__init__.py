"""rigd's configuration: the settings (`settings`, declared with rigapi.schema's `setting()`), the
inference runtime profiles (`profiles`) and the default paths (`paths`). The names below are the
configuration's public API; everything above the config layer imports them from here."""

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
from rigapi.schema import ConfigError, Setting, declarations, setting, table

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
    "declarations",
    "describe",
    "from_dict",
    "is_loopback",
    "load",
    "parse_address",
    "setting",
    "table",
    "validate",
]
