// Package dlq reads the processor's dead-letter topic (kafka.dlq_topic): statistics of why
// messages were refused, one record by its key, and the replay of kept payloads to the raw
// topic once the cause is gone (an unknown_tenant event after its tenant was registered).
//
// # Records
//
// The processor writes one DLQ record per refused message of the raw topic: key
// "<raw topic>/<partition>/<offset>" (the refused message's position), headers reason, class
// (input_data, malformed, policy, duplicate), field, tenant_id, schema, event_id,
// payload_hmac and kept ("payload" or "metadata"), and as value the kept payload or nothing.
// A kept payload is content-free: every refused string and unknown key is a keyed hash
// "hmac-sha256:<hex>", a raw user is replaced by its pseudonym or removed. Parse checks every
// header against its pattern, so anything this package prints is a reason, a class, a field
// path, an id, a date or a hash, never a value of the refused message. A record that does not
// parse (bad key, missing, repeated or ill-formed header, a kept payload that is not a JSON
// object) is counted by what is wrong and reported, never shown. A record without the kept
// header predates content-free payloads and may hold the raw message: it is counted as
// "legacy", but its value is never shown or replayed.
//
// # Source: the topic, not the rejections table
//
// Every command reads the DLQ topic, bounded: the end offset of each partition is taken when
// the command starts, and reading stops there (--since starts at the broker's time index).
// <db>.rejections holds the same headers and would answer stats with one GROUP BY, but it is
// not the same set: retention deletes a terminated tenant's rows and drops old partitions,
// rows carry the ClickHouse batch time rather than the Kafka record time, and the kept header
// and the payload's form exist only on the topic. Stats should describe exactly what replay
// and show work on, and the DLQ is small (refusals, not traffic): reading it is cheap enough.
// The processor may write a record twice (a crash between the DLQ write and its checkpoint);
// the copies share the key and are counted once.
//
// # Replay
//
// Replay re-submits a record's payload to the raw topic (key = tenant id, RequiredAcks all,
// synchronous writes, the collector's Murmur2 partitioning) so the processor decides it
// again. Eligible are records whose payload was kept and holds no "hmac-sha256:" marker
// (anywhere, keys and escaped strings included: a payload with hashed values is incomplete),
// with a valid event_id and tenant_id that agree with the headers. Each event is written at
// most once by event id: ids the event store (<db>.events) already holds are skipped, as are
// repeats within the run; an event stored by the processor between that check and the write
// is caught by the processor's own event-id dedupe. So a second run after the processor
// stored the first replays nothing new. Records refused again after a replay come back to the
// DLQ under a new key (their new raw position); a later run replays each event id once. The
// processor decides a replayed event as it would a new one: one older than events.max_age
// (7 days by default) is refused again as too_old, so replay soon after the cause is fixed.
// Malformed DLQ records cannot be matched against --reason or --tenant; every run counts them.
//
// A user-level event (every category but tenant_profile/v1) whose kept payload has no user —
// the raw user was dropped by policy because the tenant had no pseudonymisation key — is
// replayed with the nil UUID as user. The processor pseudonymises it like any user, so all
// such events of a tenant count as one unknown user per tenant and pseudonymisation period
// (month): feature and user counts include them as a single user. A kept user is already a
// pseudonym; it is pseudonymised again, so replayed events are not linked to the user's other
// events.
//
// Every run, dry runs included, appends one record to the audit log (audit): principal
// "operator:<OS user>", kind operator, report dlq_replay, decision allowed (failed when the
// run failed), a hash of the filters as params_hash, and as reason the filters and the counts
// — never content. The tables are checked before anything is written, so a replay without an
// audit record does not happen unless the audit insert itself fails after the writes (then
// the error says so).
package dlq
