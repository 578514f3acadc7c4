"""The database: engine and sessions, ORM models, queries, the job state machine and the
Alembic migrations (package data in ``migrations/``).

May import only the leaves (types, errors, clock, units). Queries take a Session and never
commit: services and the controller own the transaction.
"""
