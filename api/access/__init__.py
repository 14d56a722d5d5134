"""Who may do what: bearer tokens and SMART scopes (auth), the store scoped to one caller (the
access gate), and the audit record of each operation."""
