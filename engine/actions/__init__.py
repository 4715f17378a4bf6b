"""Action: the trigger record, the one engine module the connectors import."""
