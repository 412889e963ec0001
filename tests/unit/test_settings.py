import pytest

from core.errors import ConfigurationError
from core.settings import Settings, get_settings, normalise_sqlalchemy_url, redact_url


@pytest.mark.parametrize(
    "url,expected",
    [
        ("postgres://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgresql://u:p@h/d?sslmode=require", "postgresql+psycopg://u:p@h/d?sslmode=require"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg://u@h/d"),
    ],
)
def test_database_url_is_normalised_to_psycopg3(url, expected):
    assert normalise_sqlalchemy_url(url) == expected


def test_dagster_gets_psycopg2():
    assert normalise_sqlalchemy_url("postgresql://u@h/d", driver="psycopg2") == "postgresql+psycopg2://u@h/d"


def test_non_postgres_url_is_refused():
    with pytest.raises(ConfigurationError, match="PostgreSQL URL"):
        normalise_sqlalchemy_url("sqlite:///x.db")


def test_redact_url_hides_password():
    assert redact_url("postgresql+psycopg://u:s3cret@h/d") == "postgresql+psycopg://u:***@h/d"


def test_prod_refuses_dev_defaults(monkeypatch):
    monkeypatch.setenv("EAP_ENV", "prod")
    monkeypatch.delenv("EAP_JWT_SECRET", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError) as exc:
            get_settings()
        assert "EAP_JWT_SECRET" in exc.value.message
        assert "\n" not in exc.value.message
    finally:
        monkeypatch.setenv("EAP_ENV", "test")
        get_settings.cache_clear()


def test_prod_with_real_secrets_is_accepted(monkeypatch):
    s = Settings(
        env="prod",
        jwt_secret="x" * 40,
        database_url="postgresql://owner:pw@db.internal/eap",
        app_db_password="apppw",
    )
    assert s.database_url == "postgresql+psycopg://owner:pw@db.internal/eap"
    assert not s.embedded_db


def test_role_names_must_be_identifiers():
    with pytest.raises(ValueError):
        Settings(app_db_role='eap"; DROP TABLE x; --')


def test_dev_secret_is_stable_per_home(tmp_path):
    a = Settings(home=tmp_path)
    b = Settings(home=tmp_path)
    assert a.jwt_signing_secret() == b.jwt_signing_secret()
    assert len(a.jwt_signing_secret()) >= 32
    assert (tmp_path / "secrets" / "jwt_secret").stat().st_mode & 0o077 == 0
    assert Settings(home=tmp_path / "other").jwt_signing_secret() != a.jwt_signing_secret()
