"""How the auth façade reads its configuration: kubeconfig, namespace, a clear error."""

from __future__ import annotations

import asyncio

import pytest
from kube_api_standin import KubeApiStandin

from datastorage.app import build_context
from datastorage.auth.authenticator import Authenticator
from datastorage.auth.reviews import KubeConfigError
from datastorage.config import ConfigError, load_settings


def build(env: dict[str, str]) -> Authenticator:
    authenticator = Authenticator.from_settings(load_settings(env))
    asyncio.run(authenticator.aclose())
    return authenticator


def test_the_namespace_defaults_to_the_kubeconfig_context_and_can_be_set(tmp_path):
    kubeconfig = str(KubeApiStandin().write_kubeconfig(tmp_path / "config", namespace="ns-1"))
    assert build({"KUBECONFIG": kubeconfig}).namespace == "ns-1"
    chosen = build({"KUBECONFIG": kubeconfig, "DATASTORAGE_AUTH_NAMESPACE": "audit"})
    assert chosen.namespace == "audit"
    audiences = build({"KUBECONFIG": kubeconfig, "DATASTORAGE_AUTH_AUDIENCES": "a,b"}).audiences
    assert audiences == ("a", "b")


def test_an_unusable_configuration_is_one_clear_error(tmp_path):
    with pytest.raises(KubeConfigError, match="kubeconfig"):
        build({"KUBECONFIG": str(tmp_path / "missing")})
    with pytest.raises(KubeConfigError, match="in-cluster"):
        build({})  # no KUBECONFIG and not in a pod


def test_the_server_refuses_to_start_on_an_unusable_configuration(tmp_path):
    """create_app's context: the kubeconfig error becomes the one-line configuration error
    (exit code 2) naming DATASTORAGE_AUTH."""
    settings = load_settings(
        {
            "DATASTORAGE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "DATASTORAGE_AUTH": "kubernetes",
            "KUBECONFIG": str(tmp_path / "missing"),
        }
    )
    with pytest.raises(ConfigError, match="^DATASTORAGE_AUTH=kubernetes: cannot load kubeconfig"):
        build_context(settings)
