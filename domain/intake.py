"""The built-in intake flow: a report on an audio visit (a site visit recorded on audio),
as a Telegram intake bot collects it. `intake.toml` holds the same definition as data."""

from __future__ import annotations

from .flow_definition import Branch, FlowDefinition, FlowRegistry, Rule, Step
from .validators import choice, date, integer, text

BUILDING_TYPES = {
    "residential": ["house", "home", "apartment", "flat"],
    "office": ["business centre", "business center", "bc"],
    "school": ["education"],
    "hospital": ["clinic", "medical"],
    "industrial": ["factory", "plant", "warehouse"],
    "retail": ["shop", "store", "mall"],
    "other": [],
}

INTAKE_V1 = FlowDefinition(
    name="intake",
    version=1,
    title="Audio visit report",
    modes=("interview", "design"),
    idle_timeout_s=300.0,
    steps=(
        Step.ask(
            "audio_number",
            "What is the number of the audio recording?",
            integer(min=1, max=99999),
            "date",
        ),
        Step.ask("date", "When was the visit? For example 21.11.2026.", date(), "employee"),
        Step.ask(
            "employee",
            "Who made the visit? Please send the employee's name.",
            text(max_length=200),
            "place",
        ),
        Step.ask("place", "Which place was visited?", text(max_length=200), "building_type"),
        Step.ask(
            "building_type",
            "What kind of building is {place}? One of: residential, "
            "office, school, hospital, industrial, retail, other.",
            choice(BUILDING_TYPES),
            "zone",
        ),
        Step.ask(
            "zone",
            "Which zone of the building was visited?",
            text(max_length=200),
            Branch(when=(Rule(mode="design", goto="city"),), otherwise="client_name"),
        ),
        Step.ask("city", "Which city is {place} in?", text(max_length=200), "confirm"),
        Step.ask("client_name", "What is the client's name?", text(max_length=200), "confirm"),
        Step.confirm(
            "confirm",
            "Please check the report for audio {audio_number}. "
            "Reply yes to save it, or no to change something.",
        ),
    ),
)


def builtin_registry() -> FlowRegistry:
    """A registry holding the built-in flow definitions."""
    return FlowRegistry([INTAKE_V1])
