// Package attack holds the attack tests of Shukei's promises "Nothing the policy forbids is
// kept" (docs/promises.md, promises 1-4). They were written from the promise sentences, the
// README, the event contracts and the command-line help alone, without reading the guard, the
// decision step, the processor, the collector or the anonymizer (brief: BRIEF.md).
//
// Every test runs the real binary's roles (collector, processor) as subprocesses against the
// real Kafka broker and ClickHouse server (internal/servicetest: its own database and topics),
// sends what the promises say must be refused or forgotten, and then reads back everything
// Shukei wrote: every String-typed column of every table of the test's databases, every record
// of the DLQ topic, and every line every role printed. When an attack fails, the code is
// fixed, never the attack.
package attack
