"""rigd's configuration: the settings (`settings`, declared with rigapi.schema's `setting()`), the
inference runtime profiles (`profiles`) and the default paths (`paths`). The names below are the
configuration's public API; everything above the config layer imports them from here. They load
on first use: rigctl, which needs only the default paths, does not pay for the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal.lazy import exports

if TYPE_CHECKING:
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

_HOME = {
    **dict.fromkeys(("CONFIG_ENV", "CURTAIL_STEPS", "DEFAULT_CONFIG_PATH", "ROLES", "Config",
                     "HashingConfig", "TokenGrant", "config_path", "describe", "from_dict",
                     "is_loopback", "load", "parse_address", "validate"),
                    "agent.config.settings"),
    **dict.fromkeys(("ConfigError", "Setting", "declarations", "setting", "table"),
                    "rigapi.schema"),
}
__getattr__, __dir__ = exports("agent.config", _HOME, globals())

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
