"""The daemon half of the terminal relay: ``ds01q shell``/``attach`` over the socket."""
