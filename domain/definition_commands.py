"""The Engine's commands and queries on flow definitions as facts in the log: record the
versions a process runs, find the definition a run names (loaded here, else rebuilt from
the log), list the versions recorded."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from eventsourcing.domain import Aggregate

from .commands import Commands
from .definition_history import FlowDefinitionHistory, RegisteredVersion, history_id
from .errors import DefinitionError, NotFound, Problem
from .flow_definition import FlowDefinition, FlowRegistry

Key = tuple[str, int]


class DefinitionCommands(Commands):
    """Definition versions in the log: registered once, refused when changed in place,
    and read back by any process that runs the runs they started."""

    flows: FlowRegistry
    recorded_versions: set[Key]  # versions this process knows the log holds, as loaded
    definitions_from_log: dict[Key, FlowDefinition]  # versions rebuilt from the log

    def check_definitions(self, definitions: Iterable[FlowDefinition] | None = None) -> None:
        """Compare these definitions (by default every loaded one) with the versions the
        log holds, recording nothing: DefinitionError if one differs from the version of
        the same number in the log, naming the file it came from. A version the log does
        not hold yet is recorded with the first run that starts on it."""
        chosen = self.flows.definitions() if definitions is None else list(definitions)
        histories: dict[str, FlowDefinitionHistory | None] = {}
        problems: list[Problem] = []
        for definition in chosen:
            name = definition.name
            if name not in histories:
                try:
                    histories[name] = self._load(history_id(name), FlowDefinitionHistory)
                except NotFound:
                    histories[name] = None
            history = histories[name]
            if history is None or definition.version not in history.versions:
                continue
            source = self.flows.source_of(name, definition.version)
            try:
                history.check(definition, source)
            except DefinitionError as changed:
                problems.extend(changed.problems)
                continue
            self.recorded_versions.add((name, definition.version))
        if problems:
            raise DefinitionError(*problems)

    def register_definitions(
        self, definitions: Iterable[FlowDefinition] | None = None, *, at: datetime | None = None
    ) -> list[Key]:
        """Record in the log each version of these definitions (by default every loaded
        one) that it does not hold yet, in one transaction, before any run starts on them;
        the (name, version) pairs recorded now. DefinitionError, recording nothing, if a
        version differs from the one the log holds (naming the file it came from)."""
        chosen = self.flows.definitions() if definitions is None else list(definitions)
        at = self._now(at)
        recorded: list[Key] = []

        def work() -> list[Aggregate]:
            recorded.clear()
            histories: dict[str, FlowDefinitionHistory] = {}
            problems: list[Problem] = []
            for definition in chosen:
                name = definition.name
                if name not in histories:
                    histories[name] = self._history(name, at)
                source = self.flows.source_of(name, definition.version)
                try:
                    if histories[name].register(definition, source, at=at):
                        recorded.append((name, definition.version))
                except DefinitionError as changed:
                    problems.extend(changed.problems)
            if problems:
                raise DefinitionError(*problems)
            return [h for h in histories.values() if h.pending_events]

        self._transact(work)
        self.recorded_versions.update((d.name, d.version) for d in chosen)
        return recorded

    def definition(self, name: str, version: int | None = None) -> FlowDefinition:
        """The definition of this name and version: as loaded in this process, else (for a
        version given) as the log recorded it, rebuilt with this process's code."""
        try:
            return self.flows.get(name, version)
        except NotFound:
            if version is None:
                raise
            found = self.definitions_from_log.get((name, version))
            if found is None:
                found = self._rebuilt(name, version)
                self.definitions_from_log[(name, version)] = found
            return found

    def definition_versions(self, name: str) -> list[RegisteredVersion]:
        """Every version of a definition the log holds, oldest first."""
        try:
            history = self._load(history_id(name), FlowDefinitionHistory)
        except NotFound:
            raise NotFound(f"no version of flow {name!r} is recorded in the log") from None
        return [history.versions[v] for v in sorted(history.versions)]

    def _recording(self, definition: FlowDefinition, at: datetime) -> list[Aggregate]:
        """The definition's history with its version recorded, to save with a run that
        starts on it; nothing when the log holds it already (known since start-up)."""
        if (definition.name, definition.version) in self.recorded_versions:
            return []
        history = self._history(definition.name, at)
        source = self.flows.source_of(definition.name, definition.version)
        history.register(definition, source, at=at)
        return [history] if history.pending_events else []

    def _history(self, name: str, at: datetime) -> FlowDefinitionHistory:
        try:
            return self._load(history_id(name), FlowDefinitionHistory, cached=True)
        except NotFound:
            return FlowDefinitionHistory.open(name, at=at)

    def _rebuilt(self, name: str, version: int) -> FlowDefinition:
        loaded = self.flows.all()
        known = "; ".join(f"{n} v{', v'.join(map(str, vs))}" for n, vs in loaded) or "none"
        missing = NotFound(
            f"no flow definition {name!r} v{version} is loaded here or recorded in the log"
            f" (loaded: {known})"
        )
        try:
            history = self._load(history_id(name), FlowDefinitionHistory)
        except NotFound:
            raise missing from None
        recorded = history.versions.get(version)
        if recorded is None:
            raise missing
        try:
            return self.flows.compile(recorded.data())
        except DefinitionError as error:
            reasons = "; ".join(problem.reason for problem in error.problems)
            raise DefinitionError(
                Problem(
                    reason=f"not loaded here, and the version the log holds cannot be rebuilt"
                    f" in this process: {reasons}; give this process the code it names"
                    " (--code, $VOXLEDGER_CODE)",
                    flow=name,
                    version=version,
                )
            ) from None
