"""Persistence on MongoDB: the driver (client.py, its only importer), versioned writes,
reads, search, paging, search keys, indexes, conditional-create claims and change events."""
