"""escalator: after-hours escalation paging daemon."""
