"""Storage: SQL schema, engine and migrations, artifact registry."""
