"""`partition_of` pinned against the Java client's partitions and librdkafka's CRC-32: a
backfilled state must land in the partition whose worker will read it."""

from __future__ import annotations

import pytest

from engine.offline.backfill import Partitioner, partition_of

# Kafka's own test vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
# testMurmur2): Utils.murmur2(key.getBytes()) as a signed 32-bit int.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 4, 7, 12, 100])
def test_murmur2_random_places_keys_as_the_java_client(partitions):
    """The Java producer's default: Utils.toPositive(Utils.murmur2(key)) % numPartitions."""
    got = {k: partition_of(k, partitions, Partitioner.MURMUR2_RANDOM) for k in JAVA_MURMUR2}
    assert got == {k: (h & 0x7FFFFFFF) % partitions for k, h in JAVA_MURMUR2.items()}


def test_murmur2_random_known_partitions():
    """The same, written out for 7 partitions (so the formula above is not all that is checked)."""
    got = {k: partition_of(k, 7, Partitioner.MURMUR2_RANDOM) for k in JAVA_MURMUR2}
    assert got == {"21": 3, "foobar": 0, "a-little-bit-long-string": 1, "a-little-bit-longer-string": 0,
                   "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": 3, "abc": 4}


def test_consistent_random_is_crc32_of_the_utf8_key():
    """librdkafka's default: CRC-32 of the key modulo the partitions; 0xCBF43926 is CRC-32's check
    value (of "123456789")."""
    assert [partition_of("123456789", n, Partitioner.CONSISTENT_RANDOM) for n in (1, 4, 7, 100)] == [
        0xCBF43926 % n for n in (1, 4, 7, 100)]
    assert partition_of("ü-ñ", 7, Partitioner.CONSISTENT_RANDOM) == 5   # UTF-8 bytes, not code points
