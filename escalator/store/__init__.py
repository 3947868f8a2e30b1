"""Storage adapter: the database is the source of truth for ladders, contacts and incidents."""
