"""teleport.yaml: the file schema, precise errors, `teleport start` flag merge, the sample.

    parse_file_config / load_file_config   YAML -> FileConfig (schema.py, loader.py)
    make_config / load_config              FileConfig + StartFlags -> Config (runtime.py)
    sample_config                          the `teleport configure` text (sample.py)
    sshalgos                               SSH algorithm sets: defaults, checks, asyncssh options
"""

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
