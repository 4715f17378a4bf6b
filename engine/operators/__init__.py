"""The live dataflow (`triggers run`): Bytewax operators around the pure core.

    Kafka partition (source, offsets from Redis)
      -> batch of raw messages + due deadlines
      -> decode, load states, evaluate   (on the worker that reads the partition: no exchange)
      -> triggers to the sinks, dead letters to their output
      -> commit: states + offset + deadline index, one atomic Redis write per partition epoch

A partition is read by exactly one worker, and Kafka keeps a customer's events in one
partition, so each worker owns the states of its partitions' customers and caches them.
A partition's changes are committed at the end of each Bytewax epoch, once every output of
that epoch is written (the source is polled for the next epoch only then): a crash replays
at most one epoch, whose state changes were never committed (exactly-once state) and whose
triggers are sent again with the same ids (at-least-once delivery).
"""
