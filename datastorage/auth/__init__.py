"""Kubernetes-native authentication, authorization and per-caller write limits (docs/auth.md).

The package owns the rules; the HTTP layer (`datastorage.http.authentication`) only calls the
façade in `authenticator.py`. Nothing here imports Starlette.
"""
