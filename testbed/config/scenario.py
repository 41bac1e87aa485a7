"""The scenario: a YAML file validated into frozen, typed configuration.

Every node rejects unknown keys; every problem is reported as ``file: field: problem``
(:class:`ScenarioError`). ``--set key.sub=value`` overrides are applied to the raw
mapping before validation, so they are validated exactly like the file itself.

Import every scenario name from this module. The definitions live by section in dataset.py,
framework.py, topology.py, emulation.py and rounds.py, the whole scenario in schema.py, and the
reading (YAML, overrides, validation, reference checks) in loading.py.
"""

from __future__ import annotations

from testbed.config.dataset import DatasetConfig, PartitionConfig
from testbed.config.emulation import DockerConfig, EmulationConfig
from testbed.config.framework import FrameworkConfig, KDOptions, LoraConfig, SplitOptions
from testbed.config.loading import (
    apply_override,
    check_references,
    format_validation_error,
    load_scenario,
    read_raw,
    validate_raw,
)
from testbed.config.node import ScenarioError
from testbed.config.dataset import ColumnsConfig
from testbed.config.rounds import (
    AvailabilityConfig,
    EvalConfig,
    FaultsConfig,
    GenerateConfig,
    KillFault,
    NetworkConfig,
    PolicyConfig,
)
from testbed.config.schema import BUNDLED_KINDS, DEFAULT_KD_PUBLIC_SIZE, Scenario
from testbed.config.task import TaskConfig, TaskKind
from testbed.config.topology import FleetEntry, LinkSpec, ServerConfig, ServerLinkConfig

__all__ = [
    "BUNDLED_KINDS",
    "DEFAULT_KD_PUBLIC_SIZE",
    "ColumnsConfig",
    "GenerateConfig",
    "TaskConfig",
    "TaskKind",
    "AvailabilityConfig",
    "DatasetConfig",
    "DockerConfig",
    "EmulationConfig",
    "EvalConfig",
    "FaultsConfig",
    "FleetEntry",
    "FrameworkConfig",
    "KDOptions",
    "KillFault",
    "LinkSpec",
    "LoraConfig",
    "NetworkConfig",
    "PartitionConfig",
    "PolicyConfig",
    "Scenario",
    "ScenarioError",
    "ServerConfig",
    "ServerLinkConfig",
    "SplitOptions",
    "apply_override",
    "check_references",
    "format_validation_error",
    "load_scenario",
    "read_raw",
    "validate_raw",
]
