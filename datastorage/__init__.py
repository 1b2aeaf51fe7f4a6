"""DataStorage: the audit-trail and remediation-workflow catalog service."""

__version__ = "0.1.0"
