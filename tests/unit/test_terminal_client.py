"""The client half of the terminal relay: detach keys and framing (no daemon needed)."""
import pytest

from ds01q.errors import RequestError


def test_detach_keys_and_framing_between_client_and_daemon() -> None:
    from ds01q import protocol as relay
    from ds01q.client import terminal as cli_shell

    keys = cli_shell.parse_detach_keys("ctrl-p,ctrl-q")
    assert keys == b"\x10\x11" and cli_shell.describe_keys(keys) == "Ctrl-P Ctrl-Q"
    m = cli_shell.DetachMatcher(keys)
    assert m.feed(b"ls\x10") == (b"ls", False)  # a possible start is held back
    assert m.feed(b"x") == (b"\x10x", False)  # ... and passed on when the sequence breaks
    assert m.feed(b"\x10\x10") == (b"\x10", False)
    assert m.feed(b"\x11") == (b"", True)
    assert cli_shell.DetachMatcher(cli_shell.parse_detach_keys("ctrl-],d")).feed(b"a\x1dd") == (b"a", True)
    for bad in ("ctrl-", "ctrl-pq", "", "alt-x"):
        with pytest.raises(RequestError):
            cli_shell.parse_detach_keys(bad)
    wire = relay.frame(b"D", b"echo hi\r") + relay.frame(b"R", relay.pack_size(40, 132))
    r = relay.FrameReader(wire[:7])
    assert list(r.frames()) == []
    r.feed(wire[7:])
    assert list(r.frames()) == [(b"D", b"echo hi\r"), (b"R", relay.SIZE.pack(40, 132))]
    back = relay.FrameReader(relay.frame(relay.EXIT, b'{"exit_code": 7}'))
    assert list(back.frames()) == [(b"E", b'{"exit_code": 7}')]
    with pytest.raises(ValueError):
        list(relay.FrameReader(relay.HEADER.pack(b"D", relay.MAX_PAYLOAD + 1)).frames())
