"""Topic names and topic references (``users``, ``users:123``).

A topic *name* becomes part of a table name, so it is validated strictly and never normalised:
anything outside the rules is rejected with a message that says which rule it broke.
"""

import re
from dataclasses import dataclass

from eventrelay.errors import InvalidInput

NAME_MAX_LENGTH = 50
ID_MAX_LENGTH = 255
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_ID_RE = re.compile(r"[A-Za-z0-9_.@-]+")


def validate_topic_name(name: object, field: str = "topic") -> str:
    """Return ``name`` unchanged if it is a valid topic name, else raise ``InvalidInput``."""
    if not isinstance(name, str):
        raise InvalidInput(f"topic name must be a string, got {type(name).__name__}", field)
    if name == "":
        raise InvalidInput("topic name is empty", field)
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(f"topic name is {len(name)} characters long; at most {NAME_MAX_LENGTH} are allowed", field)
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"topic name {name!r} is invalid: it must start with a lowercase letter a-z and contain only "
            "lowercase letters, digits and underscores",
            field,
        )
    return name


def validate_topic_id(topic_id: object, field: str = "topic") -> str:
    if not isinstance(topic_id, str):
        raise InvalidInput(f"topic id must be a string, got {type(topic_id).__name__}", field)
    if topic_id == "":
        raise InvalidInput("topic id after ':' is empty", field)
    if len(topic_id) > ID_MAX_LENGTH:
        raise InvalidInput(f"topic id is {len(topic_id)} characters long; at most {ID_MAX_LENGTH} are allowed", field)
    if not _ID_RE.fullmatch(topic_id):
        raise InvalidInput(
            f"topic id {topic_id!r} is invalid: only letters, digits and _ . @ - are allowed",
            field,
        )
    return topic_id


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A parsed reference: the topic ``name`` (the unit of storage) and an optional ``id`` scope."""

    name: str
    id: str | None = None

    @classmethod
    def parse(cls, ref: object, field: str = "topic") -> "TopicRef":
        """Parse ``name`` or ``name:id``; raise ``InvalidInput`` naming what is wrong."""
        if not isinstance(ref, str):
            raise InvalidInput(f"topic must be a string like 'users' or 'users:123', got {type(ref).__name__}", field)
        name, sep, topic_id = ref.partition(":")
        validate_topic_name(name, field)
        if not sep:
            return cls(name)
        return cls(name, validate_topic_id(topic_id, field))

    def covers(self, other: "TopicRef") -> bool:
        """True when this reference, used as a grant, includes everything ``other`` refers to.

        ``users`` covers ``users`` and every ``users:<id>``; ``users:123`` covers only itself.
        """
        return self.name == other.name and (self.id is None or self.id == other.id)

    def __str__(self) -> str:
        return self.name if self.id is None else f"{self.name}:{self.id}"
