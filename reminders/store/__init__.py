"""The store: tables, sessions, migrations and the queries staff look things up by."""
