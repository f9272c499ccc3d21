"""Chaos tests: the daemon, its workers, brokers and sinks fail at random points; a ledger
proves that no record is lost and no per-key order is violated."""
