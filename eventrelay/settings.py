"""EventRelay settings: one module, every value from the environment (and an optional ``.env``).

Every process type (daphne, grpcserver, celery worker and beat, management commands) imports this
module, so a value read here means the same thing everywhere. ``ER_JWT_SECRET`` is validated by a
system check (``eventrelay.checks``) that every entry point runs before it serves anything.
"""

from pathlib import Path

import dj_database_url
from dotenv import load_dotenv

from eventrelay.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# A real environment variable always wins over the file, so tests and operators can override it.
load_dotenv(BASE_DIR / ".env", override=False)

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or "insecure-dev-key-set-DJANGO_SECRET_KEY-in-production"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "console.apps.ConsoleAdminConfig",  # django.contrib.admin with our site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "eventrelay",
    "topics",
    "events",
    "webhooks",
    "consumers",
    "grpc_api",
    "api",
    "ws_api",
    "console",
]

MIDDLEWARE = [
    # First, so every line logged for a request (and every task it queues) carries its id.
    "eventrelay.request_ids.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the API docs' static files from the web process itself (no separate
    # web server to set up); straight from the apps' static folders, so no collectstatic step.
    "eventrelay.static_files.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "eventrelay.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "eventrelay.wsgi.application"
ASGI_APPLICATION = "eventrelay.asgi.application"

DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/eventrelay")
# Persistent connections. No per-request health check: it costs a "SELECT 1" round trip before
# every unit of work in the gRPC and WebSocket processes; a connection that broke is dropped after
# the one call that found it broken (Django's errors_occurred check), and reopened on the next.
# (The web process closes each HTTP request's connection when the request ends instead: see
# eventrelay.db.close_connections_after_each_request.)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=False)}
# Shown in pg_stat_activity, so an operator can tell which process holds which connections.
ER_DB_APPLICATION_NAME = env_str("ER_DB_APPLICATION_NAME", "eventrelay")
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("application_name", ER_DB_APPLICATION_NAME)
# Prepared statements for the few statements every consumer fetch and ack runs (eventrelay.db.prepared_cursor):
# nothing else is ever prepared (a threshold no statement reaches). Off (None, Django's default) behind a
# connection pooler in transaction mode that cannot keep them (PgBouncer before 1.21).
ER_DB_PREPARED_STATEMENTS = env_bool("ER_DB_PREPARED_STATEMENTS", True)
DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 2**31 - 1 if ER_DB_PREPARED_STATEMENTS else None
# A bounded pool of connections shared by the process's threads (psycopg_pool), instead of one connection per
# thread: the webhook worker (the Procfile sets it from ER_WEBHOOK_DB_POOL) runs many delivery threads that hold
# a connection only while they talk to PostgreSQL, never while a request to a receiver is in flight.
ER_DB_POOL = env_int("ER_DB_POOL", 0)
if ER_DB_POOL > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # (Django's pool requires it: the pool keeps the connections)
    # Checked when taken (Django's pool does so with CONN_HEALTH_CHECKS): after a PostgreSQL restart every idle
    # connection of the pool is dead, and a retry (a lease release after an error, say) must not get the next one.
    # Checked by its socket first, not by a round trip each time (eventrelay.pooled_postgresql).
    DATABASES["default"]["ENGINE"] = "eventrelay.pooled_postgresql"
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["OPTIONS"]["pool"] = {"min_size": 1, "max_size": ER_DB_POOL, "timeout": 60}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# The live fan-out's pub/sub channels and the rate limits' keys start with this (Celery's queue is named by
# ER_CELERY_QUEUE), so two deployments or two test runs can share one Redis: Redis's database numbers do not
# separate pub/sub channels.
ER_REDIS_PREFIX = env_str("ER_REDIS_PREFIX", "er")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Messages live in the session, not a cookie: the admin shows new webhook secrets once as a message.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

STATIC_URL = "static/"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

# Logs (docs/operations.md "Logs"): a client's mistake (a 4xx, a refused token, an invalid frame) is one INFO line
# without a traceback, a fault of ours is ERROR with its traceback; every line carries the request id of the work it
# belongs to. ER_LOG_FORMAT=json writes one JSON object per line; ER_ACCESS_LOG=1 adds the web process's line per
# request (off by default: the lines that matter are logged anyway, and a 200 needs no operator's attention).
ER_LOG_FORMAT = env_str("ER_LOG_FORMAT", "plain")
if ER_LOG_FORMAT not in ("plain", "json"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"ER_LOG_FORMAT must be plain or json, got {ER_LOG_FORMAT!r}")
ER_ACCESS_LOG = env_bool("ER_ACCESS_LOG", False)
LOGGING_CONFIG = "eventrelay.logs.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "eventrelay.logs.PlainFormatter"},
        "json": {"()": "eventrelay.logs.JsonFormatter"},
    },
    "filters": {
        "request_id": {"()": "eventrelay.logs.RequestIdFilter"},
        "client_errors_at_info": {"()": "eventrelay.logfilters.ClientErrorsAtInfo"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": ER_LOG_FORMAT,
            "filters": ["request_id", "client_errors_at_info"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("ER_LOG_LEVEL", "INFO")},
    # eventrelay.webserver's access log: one INFO line per HTTP request and WebSocket connection when asked for.
    "loggers": {"eventrelay.access": {"level": "INFO" if ER_ACCESS_LOG else "WARNING"}},
}

# --- EventRelay -----------------------------------------------------------------------------------

# Signing key for every API token (HS256). Checked at start-up by eventrelay.checks: at least
# ER_JWT_SECRET_MIN_LENGTH characters or the process refuses to start.
ER_JWT_SECRET = env_str("ER_JWT_SECRET")
ER_JWT_SECRET_MIN_LENGTH = 32

# Address the web and gRPC processes listen on; 0.0.0.0 to accept connections from other hosts.
ER_BIND_HOST = env_str("ER_BIND_HOST", "127.0.0.1")
ER_HTTP_PORT = env_int("ER_HTTP_PORT", 9000)
ER_GRPC_PORT = env_int("ER_GRPC_PORT", 50051)

# Prometheus metrics (eventrelay.metrics, docs/operations.md): web serves /metrics on ER_HTTP_PORT, the other
# processes on a port of their own, bound to ER_BIND_HOST (0: none). Open from loopback; from anywhere else it
# takes an admin token or this token.
ER_GRPC_METRICS_PORT = env_int("ER_GRPC_METRICS_PORT", 9101)
ER_WORKER_METRICS_PORT = env_int("ER_WORKER_METRICS_PORT", 9102)
ER_BEAT_METRICS_PORT = env_int("ER_BEAT_METRICS_PORT", 9103)
ER_METRICS_TOKEN = env_str("ER_METRICS_TOKEN")

# Publish limits (docs/api.md "Events"): a batch is validated as a whole against these before any write.
ER_MAX_BATCH_EVENTS = env_int("ER_MAX_BATCH_EVENTS", 1000)
ER_MAX_EVENT_BYTES = env_int("ER_MAX_EVENT_BYTES", 256 * 1024)
ER_MAX_REQUEST_BYTES = env_int("ER_MAX_REQUEST_BYTES", 16 * 1024 * 1024)
# How deeply an event's data and context may nest arrays and objects (the outermost is level 1), on
# every transport: well below what any reader's parser (Python's json, orjson, browsers) reads back.
ER_MAX_JSON_DEPTH = env_int("ER_MAX_JSON_DEPTH", 64)

# Pull limits (docs/grpc.md): batch_size defaults to 100 and is clamped to 1,000.
ER_PULL_DEFAULT_BATCH = env_int("ER_PULL_DEFAULT_BATCH", 100)
ER_PULL_MAX_BATCH = env_int("ER_PULL_MAX_BATCH", 1000)

# Live fan-out (events.live): notifications travel through Channels' Redis pub/sub layer, one Redis
# subscription per process per topic. Events ride in the notification while small; bigger batches
# are re-read from PostgreSQL once per process.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{ER_REDIS_PREFIX}:live"},
    }
}
ER_LIVE_INLINE_BYTES = env_int("ER_LIVE_INLINE_BYTES", 64 * 1024)
# How often each process re-checks the last offset of topics it has live subscribers for: a lost
# notification delays an event by at most this long.
ER_LIVE_TICK_MS = env_int("ER_LIVE_TICK_MS", 1000)
# The web process runs a full garbage collection at most once per this many middle-generation
# collections (Python's default: 10); see eventrelay/gc_tuning.py.
ER_GC_FULL_EVERY = env_int("ER_GC_FULL_EVERY", 100)
# Events buffered per live subscription before it is ended with slow_consumer.
ER_LIVE_BUFFER_EVENTS = env_int("ER_LIVE_BUFFER_EVENTS", 1000)

# Durable consumers (docs/consumers.md). A fetch filtered by event name looks at most this many offsets of the
# topic for new events; an ordered consumer stops taking new events while this many wait behind their topic
# ids; a long-polling fetch of a consumer with pending events re-reads it this often (an ack elsewhere may
# have freed room); at most this many ackIds per ack, nack or extend.
ER_CONSUMER_SCAN_WINDOW = env_int("ER_CONSUMER_SCAN_WINDOW", 10_000)
ER_CONSUMER_MAX_QUEUED = env_int("ER_CONSUMER_MAX_QUEUED", 10_000)
ER_CONSUMER_RECHECK_MS = env_int("ER_CONSUMER_RECHECK_MS", 1000)
ER_CONSUMER_MAX_ACK_IDS = env_int("ER_CONSUMER_MAX_ACK_IDS", 1000)
# Beat vacuums the table of events in flight this often, when at least this many of its rows died (acks delete
# them): consumers.vacuum.
ER_CONSUMER_VACUUM_S = env_int("ER_CONSUMER_VACUUM_S", 30)
ER_CONSUMER_VACUUM_DEAD_ROWS = env_int("ER_CONSUMER_VACUUM_DEAD_ROWS", 10_000)

# Retention (topics.retention): what a new topic keeps (0: everything), how often beat sweeps, and how many
# events one sweep transaction deletes at most.
ER_RETENTION_MAX_AGE_S = env_int("ER_RETENTION_MAX_AGE_S", 0)
ER_RETENTION_MAX_EVENTS = env_int("ER_RETENTION_MAX_EVENTS", 0)
ER_RETENTION_SWEEP_S = env_int("ER_RETENTION_SWEEP_S", 60)
ER_RETENTION_BATCH = env_int("ER_RETENTION_BATCH", 10_000)

# WebSocket: the largest text frame accepted (a maximal publish plus its JSON framing), and how many
# bytes may wait unread on one connection before its subscriptions end with slow_consumer.
ER_WS_MAX_FRAME_BYTES = env_int("ER_WS_MAX_FRAME_BYTES", ER_MAX_REQUEST_BYTES + 1024 * 1024)
ER_WS_MAX_BUFFER_BYTES = env_int("ER_WS_MAX_BUFFER_BYTES", 4 * 1024 * 1024)
# Subscriptions one WebSocket connection may hold at once (each costs memory and a feed attachment).
ER_WS_MAX_SUBSCRIPTIONS = env_int("ER_WS_MAX_SUBSCRIPTIONS", 100)

# Slow clients (the web process, eventrelay.webserver): a connection is closed when its request's
# headers are not complete this many seconds after it opened (a WebSocket handshake is an HTTP
# request too), when a body is not complete this long after its headers, or when it sends nothing
# for ER_HTTP_IDLE_TIMEOUT_S while no request is in progress. ER_WS_HANDSHAKE_TIMEOUT_S: from the
# upgrade request to the WebSocket being open. 0 turns one off.
ER_HTTP_HEADER_TIMEOUT_S = env_int("ER_HTTP_HEADER_TIMEOUT_S", 20)
ER_HTTP_BODY_TIMEOUT_S = env_int("ER_HTTP_BODY_TIMEOUT_S", 120)
ER_HTTP_IDLE_TIMEOUT_S = env_int("ER_HTTP_IDLE_TIMEOUT_S", 60)
ER_WS_HANDSHAKE_TIMEOUT_S = env_int("ER_WS_HANDSHAKE_TIMEOUT_S", 5)

# gRPC server: StreamEvents sends live events, so its keepalive keeps idle streams open.
ER_GRPC_GRACE_SECONDS = env_int("ER_GRPC_GRACE_SECONDS", 10)
# A connection that has not completed its HTTP/2 handshake (the client preface) this long after it
# opened is closed.
ER_GRPC_HANDSHAKE_TIMEOUT_S = env_int("ER_GRPC_HANDSHAKE_TIMEOUT_S", 10)
# PublishStream: requests one stream may have read and not yet acknowledged; past it the server reads no more
# (HTTP/2 flow control holds the client's writes), which bounds the memory a stream holds (docs/grpc.md).
ER_GRPC_PUBLISH_STREAM_MAX_IN_FLIGHT = env_int("ER_GRPC_PUBLISH_STREAM_MAX_IN_FLIGHT", 100)
# asyncio PostgreSQL connections of the gRPC server for the statements of every consumer fetch and ack
# (eventrelay.db.serving_async_pool); 0: those run on worker threads like everything else.
ER_GRPC_ASYNC_DB_POOL = env_int("ER_GRPC_ASYNC_DB_POOL", 8)

# --- Rate limits (eventrelay.ratelimit): per principal, or per client IP without a valid token ----
# Events per second a principal may publish, and how many it may send at once (>= one full batch).
ER_RATE_LIMIT_PUBLISH_PER_S = env_int("ER_RATE_LIMIT_PUBLISH_PER_S", 2000)
ER_RATE_LIMIT_PUBLISH_BURST = env_int("ER_RATE_LIMIT_PUBLISH_BURST", 10000)
# API calls (and WebSocket frames) per second per principal.
ER_RATE_LIMIT_REQUESTS_PER_S = env_int("ER_RATE_LIMIT_REQUESTS_PER_S", 200)
ER_RATE_LIMIT_REQUESTS_BURST = env_int("ER_RATE_LIMIT_REQUESTS_BURST", 400)
# Refused tokens per client IP (brute-force protection) and WebSocket handshakes per client IP.
ER_RATE_LIMIT_AUTH_FAILURES_PER_S = env_int("ER_RATE_LIMIT_AUTH_FAILURES_PER_S", 1)
ER_RATE_LIMIT_AUTH_FAILURES_BURST = env_int("ER_RATE_LIMIT_AUTH_FAILURES_BURST", 20)
ER_RATE_LIMIT_CONNECTS_PER_S = env_int("ER_RATE_LIMIT_CONNECTS_PER_S", 20)
ER_RATE_LIMIT_CONNECTS_BURST = env_int("ER_RATE_LIMIT_CONNECTS_BURST", 200)
# Redis unreachable: allow and log (True), or refuse with rate_limited (False).
ER_RATE_LIMIT_FAIL_OPEN = env_bool("ER_RATE_LIMIT_FAIL_OPEN", True)
ER_RATE_LIMIT_REDIS_URL = env_str("ER_RATE_LIMIT_REDIS_URL", REDIS_URL)

# --- REST API (Django REST framework) ------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.handle_exception",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "EventRelay REST API",
    "DESCRIPTION": "Publish and pull events, manage topics and webhook destinations. Bearer JWT on every call.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The rules drf-spectacular cannot read off the serializers (api.schema); the enum hook is its default.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.request_bodies_allow_no_other_fields",
        "api.schema.publish_body_rules",
    ],
}
# A maximal publish (ER_MAX_REQUEST_BYTES of payload) plus its JSON framing fits in one request body.
DATA_UPLOAD_MAX_MEMORY_SIZE = ER_MAX_REQUEST_BYTES + 1024 * 1024

# --- Webhooks ---------------------------------------------------------------------------------------

ER_WEBHOOK_MAX_ATTEMPTS = env_int("ER_WEBHOOK_MAX_ATTEMPTS", 20)
ER_WEBHOOK_BACKOFF_BASE_MS = env_int("ER_WEBHOOK_BACKOFF_BASE_MS", 1000)
ER_WEBHOOK_BACKOFF_CAP_MS = env_int("ER_WEBHOOK_BACKOFF_CAP_MS", 3_600_000)
ER_WEBHOOK_TIMEOUT_S = env_int("ER_WEBHOOK_TIMEOUT_S", 10)
# Deliveries in flight per worker process (its thread pool; one at a time per stream), and the PostgreSQL
# connections those threads share (ER_DB_POOL of the worker process).
ER_WEBHOOK_CONCURRENCY = env_int("ER_WEBHOOK_CONCURRENCY", 200)
ER_WEBHOOK_DB_POOL = env_int("ER_WEBHOOK_DB_POOL", 10)
# After a secret rotation the previous secret signs beside the new one for this long.
ER_WEBHOOK_SECRET_OVERLAP_S = env_int("ER_WEBHOOK_SECRET_OVERLAP_S", 86_400)
# A destination whose every attempt has failed for this long is disabled (5 days).
ER_WEBHOOK_DISABLE_AFTER_S = env_int("ER_WEBHOOK_DISABLE_AFTER_S", 432_000)
# Destinations resolving to loopback/private/link-local addresses are refused unless this is on.
ER_WEBHOOK_ALLOW_PRIVATE = env_bool("ER_WEBHOOK_ALLOW_PRIVATE", False)
# A worker's claim on a stream lasts this long past each request's timeout; a crashed worker's
# streams are picked up by the sweep once it expires.
ER_WEBHOOK_LEASE_MARGIN_S = env_int("ER_WEBHOOK_LEASE_MARGIN_S", 30)
# How often beat sweeps for streams that are due, and how long a queued wake-up may stay unclaimed
# before the sweep assumes its message was lost and queues another.
ER_WEBHOOK_SWEEP_S = env_int("ER_WEBHOOK_SWEEP_S", 5)
ER_WEBHOOK_REQUEUE_S = env_int("ER_WEBHOOK_REQUEUE_S", 60)
ER_WEBHOOK_RESPONSE_BODY_BYTES = env_int("ER_WEBHOOK_RESPONSE_BODY_BYTES", 4096)
# Wake-ups after a publish are sent to the broker by a background thread (webhooks.wakeups): at most this many
# wait (one per topic), and each send gives up after this many seconds; dropped ones are left to the sweep.
ER_WEBHOOK_WAKE_QUEUE = env_int("ER_WEBHOOK_WAKE_QUEUE", 1000)
ER_WEBHOOK_WAKE_TIMEOUT_S = env_int("ER_WEBHOOK_WAKE_TIMEOUT_S", 2)

# --- Celery (webhook delivery, periodic sweeps) ---------------------------------------------------

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
# Tests give each run a queue of its own, so a developer's running worker never takes their tasks.
CELERY_TASK_DEFAULT_QUEUE = env_str("ER_CELERY_QUEUE", "celery")
CELERY_BEAT_SCHEDULE = {
    "sweep-webhook-streams": {"task": "webhooks.tasks.sweep", "schedule": float(ER_WEBHOOK_SWEEP_S)},
    "sweep-retention": {"task": "topics.tasks.sweep_retention", "schedule": float(ER_RETENTION_SWEEP_S)},
    "vacuum-consumer-pending": {"task": "consumers.tasks.vacuum_pending", "schedule": float(ER_CONSUMER_VACUUM_S)},
}
