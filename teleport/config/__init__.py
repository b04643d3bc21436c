"""teleport.yaml: the file schema, precise errors, `teleport start` flag merge, the sample.

    parse_file_config / load_file_config   YAML -> FileConfig (schema.py, loader.py)
    make_config / load_config              FileConfig + StartFlags -> Config (runtime.py)
    sample_config                          the `teleport configure` text (sample.py)
    sshalgos                               SSH algorithm sets: defaults, checks, asyncssh options

Names load on first use (PEP 562): a module that needs only `yamlsafe` or `sshalgos` (every
`tsh` call, through the resource codec) does not pay for the schema's models.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teleport.config.loader import load_file_config, parse_file_config
    from teleport.config.runtime import (
        AuthConfig,
        Config,
        ProxyConfig,
        SSHConfig,
        StartFlags,
        StaticToken,
        load_config,
        make_config,
        parse_labels_flag,
    )
    from teleport.config.sample import sample_config
    from teleport.config.schema import CommandLabel, FileConfig

#: Read when no `--config` is given, if it exists (as Teleport does).
DEFAULT_CONFIG_PATH = Path("/etc/teleport.yaml")

_HOME = {"load_file_config": "loader", "parse_file_config": "loader", "sample_config": "sample",
         "CommandLabel": "schema", "FileConfig": "schema",
         **dict.fromkeys(["AuthConfig", "Config", "ProxyConfig", "SSHConfig", "StartFlags",
                          "StaticToken", "load_config", "make_config", "parse_labels_flag"],
                         "runtime")}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'teleport.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"teleport.config.{home}"), name)


__all__ = [
    "AuthConfig",
    "CommandLabel",
    "Config",
    "FileConfig",
    "ProxyConfig",
    "SSHConfig",
    "StartFlags",
    "StaticToken",
    "load_config",
    "load_file_config",
    "make_config",
    "parse_file_config",
    "parse_labels_flag",
    "sample_config",
]
