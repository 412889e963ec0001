import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(platform_db):
    """The real app (lifespan included) against the session's embedded database."""
    from serving.app import create_app

    with TestClient(create_app()) as c:
        yield c
