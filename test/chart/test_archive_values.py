"""Chart values of the archive target (docs/compliance.md): the URL and endpoint reach both
containers through the ConfigMap; the credentials Secret is mounted as environment of the operator
container only (maintenance archives; the API server never needs the credentials); a URL that
is neither file:/// nor s3:// is refused by the values schema."""

from __future__ import annotations

from chart_helpers import container, helm_template, one, render


def test_archive_settings_and_credentials_secret():
    docs = render(
        None,
        (
            "archive.url=s3://audit-archive/prod",
            "archive.s3EndpointUrl=https://minio.example:9000",
            "archive.credentialsSecret=archive-credentials",
        ),
    )
    data = one(docs, "ConfigMap")["data"]
    assert data["DATASTORAGE_ARCHIVE_URL"] == "s3://audit-archive/prod"
    assert data["DATASTORAGE_S3_ENDPOINT_URL"] == "https://minio.example:9000"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    operator_sources = container(pod, "operator")["envFrom"]
    assert {"secretRef": {"name": "archive-credentials"}} in operator_sources
    assert all("secretRef" not in s for s in container(pod, "datastorage")["envFrom"])


def test_no_archive_by_default():
    data = one(render(), "ConfigMap")["data"]
    assert "DATASTORAGE_ARCHIVE_URL" not in data


def test_an_archive_url_of_another_scheme_is_refused():
    proc = helm_template(None, ("archive.url=ftp://somewhere/x",), check=False)
    assert proc.returncode != 0 and "archive" in proc.stderr
