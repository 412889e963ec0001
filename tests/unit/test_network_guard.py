import socket

import pytest


def test_non_loopback_connect_is_blocked_and_recorded(network_attempts):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(ConnectionRefusedError, match="network guard"):
            s.connect(("10.255.255.1", 80))
    finally:
        s.close()
    assert network_attempts == ["connect ('10.255.255.1', 80)"]
    network_attempts.clear()  # the autouse guard would fail this test otherwise


def test_name_resolution_of_public_hosts_is_blocked(network_attempts):
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("pypi.org", 443)
    assert network_attempts == ["resolve 'pypi.org'"]
    network_attempts.clear()


def test_loopback_is_allowed(network_attempts):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.connect(srv.getsockname())
        assert socket.getaddrinfo("localhost", 80)
    finally:
        c.close()
        srv.close()
    assert network_attempts == []
