"""The coordinator's Prometheus metrics (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "stagecast_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "stagecast_http_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
API_ERRORS = Counter("stagecast_api_errors_total", "API errors returned, by code", ["code"])
JOINS = Counter("stagecast_joins_total", "Successful call joins")
EVENTS_EMITTED = Counter("stagecast_events_total", "API events emitted", ["type"])
WEBHOOK_DELIVERIES = Counter(
    "stagecast_webhook_deliveries_total", "Webhook delivery attempts by outcome", ["outcome"]
)
EVENT_WEBSOCKETS = Gauge("stagecast_event_websockets", "Open events WebSockets on this process")
