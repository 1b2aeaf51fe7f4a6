"""Logging for every entry point (`serve`, `dev`, `operator`, the CLI): one handler on stderr.

`setup_logging` installs it with the configured format: `json` (one object per line: ts, level,
logger, msg, request_id when there is one, exc) or `console`. `request_id_var` holds the id of
the request being served (set by the HTTP middleware); `RequestIdFilter` puts it on every log
record, so a line logged anywhere while serving a request names that request.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from datastorage.config import Settings

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
        )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # httpx/httpcore (the Kubernetes API reviews) log every request URL and connection step
    # at DEBUG/INFO: noise, and nothing of theirs needs to be in the service's log.
    for noisy in ("psycopg.pool", "kopf.objects", "aiohttp.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
