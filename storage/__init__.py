"""Storage: the SQLModel tables, the database engine, migrations and the roster import."""
