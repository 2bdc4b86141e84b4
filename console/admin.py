"""Found by the admin's autodiscovery: registers the console's pages for each app's models."""

from console import consumers, topics, webhooks  # noqa: F401  (each registers its ModelAdmins)
