"""Finding 4: a caller is its uid mapped through the user database. Uids with no account, or inside
another user's /etc/subuid range, are refused unless the config allows them."""
from __future__ import annotations

import json

from tests.security.helpers import as_uid, request
from tests.support import Daemon, ensure_user

PING = json.dumps({"op": "ping", "args": {}}).encode() + b"\n"


def ping_as(daemon: Daemon, uid: int) -> object:
    return as_uid(uid, uid, lambda: request(daemon.socket, PING))


def test_uid_without_an_account_is_refused(sec_daemon: Daemon) -> None:
    ans = ping_as(sec_daemon, 54321)
    assert isinstance(ans, dict) and not ans["ok"], ans
    assert ans["error"]["code"] == "permission" and "uid 54321 has no account" in ans["error"]["message"], ans


def test_subordinate_uid_is_refused_unless_allowed(make_sec_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stu1 = ensure_user("ds01q-stu1")
    sub = tmp_path / "subuid"
    sub.write_text(f"ds01q-stu1:300000:65536\n{stu1.pw_uid}:400000:10\n")
    d = make_sec_daemon(security={"allow_unmapped_uids": True, "subuid_file": str(sub)})
    for uid in (300007, 400003):
        ans = ping_as(d, uid)
        assert isinstance(ans, dict) and not ans["ok"], ans
        assert f"uid {uid} is a subordinate uid of" in ans["error"]["message"], ans
    ok = ping_as(d, 500001)  # not in anyone's range: allowed by allow_unmapped_uids
    assert isinstance(ok, dict) and ok["ok"] and ok["result"]["user"] == "uid500001", ok
    d2 = make_sec_daemon(security={"allow_unmapped_uids": True, "allow_subordinate_uids": True,
                                   "subuid_file": str(sub)})
    ok = ping_as(d2, 300007)
    assert isinstance(ok, dict) and ok["ok"] and ok["result"]["uid"] == 300007, ok


def test_account_gid_not_peer_gid(sec_daemon: Daemon) -> None:
    pw = ensure_user("ds01q-stu1")
    ans = as_uid(pw.pw_uid, 0, lambda: request(sec_daemon.socket, PING))  # a gid the account does not have
    assert isinstance(ans, dict) and ans["ok"] and ans["result"]["user"] == "ds01q-stu1", ans


def test_database_and_wal_are_private(sec_daemon: Daemon) -> None:
    """Finding 7: the SQLite file, -wal and -shm are 0600 from creation, and another user cannot read them."""
    import os
    import stat

    sec_daemon.submit("ds01q-stu1", "echo secret-in-db\n", "--hold", "--env", "TOKEN=hunter2")
    db = sec_daemon.root / "ds01q.db"
    files = [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()]
    assert db in files and len(files) >= 2, files
    for p in files:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, (p, oct(os.stat(p).st_mode))

    def peek() -> list[str]:
        out = []
        for p in files:
            try:
                open(p, "rb").read(1)
                out.append(f"read {p}")
            except PermissionError:
                pass
        return out

    from tests.security.helpers import as_user
    assert as_user("ds01q-stu2", peek) == []


def test_state_changes_are_audited_and_only_admins_read_the_log(sec_daemon: Daemon) -> None:
    """Deliverable 4: who, what, result for every state-changing request, readable by admins only."""
    job = sec_daemon.submit("ds01q-stu1", "sleep 1\n", "--hold")
    denied = sec_daemon.cli("ds01q-stu2", "cancel", str(job))
    assert denied.rc != 0
    assert sec_daemon.cli("ds01q-stu1", "cancel", str(job)).rc == 0
    assert sec_daemon.cli("ds01q-stu1", "queue").rc == 0  # read-only: not audited
    refused = sec_daemon.cli("ds01q-stu1", "admin", "audit")
    assert refused.rc != 0 and "admin" in refused.err and refused.err.count("\n") <= 1, refused
    rows = sec_daemon.cli_json("ds01q-adm1", "admin", "audit")
    got = [(r["user"], r["op"], r["ok"]) for r in reversed(rows)]
    assert got == [("ds01q-stu1", "submit", True), ("ds01q-stu2", "cancel", False),
                   ("ds01q-stu1", "cancel", True)], rows
    assert rows[0]["target"] == f'{{"ids":[{job}]}}' and rows[1]["result"].startswith("permission:"), rows
    assert rows[2]["result"] == f"ok: job {job}"
    table = sec_daemon.cli("ds01q-adm1", "admin", "audit", "--user", "ds01q-stu2")
    assert table.rc == 0 and "cancel" in table.out and "submit" not in table.out, table
