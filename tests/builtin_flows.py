"""The built-in flow definitions as tests use them: loaded from the packaged data file, as
the composition root loads them."""

from voxledger.adapters.flow_files import load_builtin
from voxledger.domain.flow_definition import FlowRegistry

INTAKE_V1 = load_builtin("intake.toml")


def builtin_registry() -> FlowRegistry:
    """A registry holding the built-in flow definitions."""
    return FlowRegistry([INTAKE_V1])
