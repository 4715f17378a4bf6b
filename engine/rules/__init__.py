"""Rules: the typed model of rules files, their loader/validator, and their compiler."""
