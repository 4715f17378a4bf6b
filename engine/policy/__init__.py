"""Policy: the contact policy every candidate trigger passes, response attribution, and lift against the control group."""
