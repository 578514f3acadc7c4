"""The client side: ``Client`` (the socket API), job-script directives and the client half
of the terminal relay. Talks to the daemon only through the socket."""
from ds01q.client.api import EXIT_BY_STATE, Client, connect, roundtrip, socket_path

__all__ = ["EXIT_BY_STATE", "Client", "connect", "roundtrip", "socket_path"]
