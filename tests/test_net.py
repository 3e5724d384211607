"""Listening: every failure says what failed (#20: `rig up` called every bind failure "already in use")."""
import socket

import pytest

from rig.procs import StartError, ensure_free


def test_bind_failures_say_what_failed():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(StartError, match=rf"Prometheus: cannot listen on 127.0.0.1:{port}: already in use; "
                                             "stop the other one"):
            ensure_free("127.0.0.1", port, "Prometheus", "stop the other one")
    with pytest.raises(StartError, match="192.0.2.1:9090: not an address of this machine") as err:
        ensure_free("192.0.2.1", 9090, "Prometheus", "stop the other one")      # TEST-NET-1, never local
    assert "stop the other one" not in str(err.value)                          # the busy-port hint only
    with pytest.raises(StartError, match="cannot resolve the listen address 'no-such-host.invalid'"):
        ensure_free("no-such-host.invalid", 9090, "Prometheus")
    ensure_free("127.0.0.1", 0, "Prometheus")                                  # a free one passes

