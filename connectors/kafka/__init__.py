"""Kafka: the event log's consumer (`source`) and the trigger producer (`sink`)."""
