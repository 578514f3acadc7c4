"""Several nodes: the server's side of dispatching to node agents over RQ (``remote``) and
the messages both sides agree on (``messages``). The agent itself is ``ds01q.daemon.agent``."""
