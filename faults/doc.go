// Package faults holds the whole-stack fault test (build tag "faults", run by
// `make test-faults`): the real collector, processor, aggregator and query service run as
// subprocesses under one steady load while each is SIGKILLed at random moments, ClickHouse and
// the Kafka broker restart and ClickHouse's insert path fails for a while; afterwards every
// acknowledged event is accounted for exactly once, every closed window is released once from
// the same partials a fault-free run makes, the ledger holds one charge per window and the
// audit chain verifies. See docs/DESIGN.md §8.
package faults
