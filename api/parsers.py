from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from events.exact_json import loads_exact


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, keeping numbers exactly as written (``events.exact_json``: validation stores
    them as the producer sent them, or refuses them naming the field), and refusing (400) rather
    than crashing on JSON nested past Python's recursion limit, which ``json`` reports as
    ``RecursionError``, not as a parse error."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return loads_exact(stream.read().decode(encoding))
        except ValueError as exc:  # (UnicodeDecodeError too)
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise ParseError(
                f"JSON is nested too deeply (data and context may nest {settings.ER_MAX_JSON_DEPTH} levels)"
            ) from None
