"""Django's PostgreSQL backend with a cheaper check of pooled connections (``ENGINE`` when ER_DB_POOL is set)."""
