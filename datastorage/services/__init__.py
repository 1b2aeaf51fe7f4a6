"""The application layer: every use case of the service, called by HTTP, the operator and the CLI.

Each module owns one family of use cases (recording and reading audit events, notifications,
the workflow catalog, the durable-write fallback they share). They take plain values, return
plain values and raise domain or store errors; nothing here knows HTTP.
"""
