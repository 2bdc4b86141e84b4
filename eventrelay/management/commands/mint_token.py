from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventrelay.auth import mint_token
from eventrelay.errors import EventRelayError


class Command(BaseCommand):
    help = "Mint an API token (HS256 JWT signed with ER_JWT_SECRET). Prints only the token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topics", default="", help="comma-separated grants, e.g. users:123,visits:123")
        parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires; 0 for no expiry")
        parser.add_argument("--admin", action="store_true", help="grant topic management and every topic")
        parser.add_argument("--sub", default=None, help="subject (who the token is for; used by rate limits)")

    def handle(self, *args: object, topics: str, ttl: int, admin: bool, sub: str | None, **options: object) -> None:
        grants = [item.strip() for item in topics.split(",") if item.strip()]
        if not grants and not admin:
            raise CommandError("give --topics (e.g. --topics users:123) or --admin")
        if ttl < 0:
            raise CommandError("--ttl must be >= 0")
        try:
            token = mint_token(grants, ttl_seconds=ttl or None, admin=admin, subject=sub)
        except EventRelayError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(token)
