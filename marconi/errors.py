"""Error types shared by every stage.

`UserError` and its subclasses mean "the input is wrong": the CLI prints their one-line
message on stderr and exits with code 2. Anything else escaping the library is an internal
or solver failure (exit code 1).

Messages read ``<where>: <field>: <what is wrong>; expected <what>``, e.g.
``model.yaml: layers[3].kind: unknown 'mamba3'; expected one of attention, mamba2, mlp``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad user input: a file, a field or a value that is not what was expected."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        # pickled as (where, message), so that an error raised in a worker process (a
        # `--jobs` replay, a Ray task) reaches the CLI as itself, exit code 2
        return type(self), (self.where, self.message)


class SpecError(UserError):
    """A model spec (model.yaml or config.json) that cannot be used."""


class TraceError(UserError):
    """A trace file or one of its lines that cannot be parsed."""


class PlanError(UserError):
    """A runtime.yaml that is malformed or was made for another model."""


class CapacityError(UserError):
    """A capacity that is not a byte count."""


class UnsupportedModelError(UserError):
    """A model the passes cannot analyse (unknown module or op); never a silent zero."""


class MissingExtraError(UserError, ImportError):
    """An input that needs an optional dependency which is not installed; the message
    names the extra that installs it. An ImportError too, for code that catches those."""


class SolverError(RuntimeError):
    """The ILP/LP solver failed or returned a status that is not a proven result (exit 1)."""
