"""Event → decode: the event struct, amounts, and decoding native and Segment JSON into events or dead letters."""
