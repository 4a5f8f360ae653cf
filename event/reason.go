package event

import "strings"

// Reason is the stable, machine-readable code of a rejection — the one type of every reason,
// whether Decode, Validate, the input-data guard or the decision (pipeline/decision) refused
// the message. Reasons are metric label values, DLQ headers and rejections rows: never rename
// one, only add.
//
// Reason implements error so that callers can test a rejection with
// errors.Is(err, event.ReasonTooOld).
type Reason string

// Reasons of class ClassMalformed: the message is not a valid event, but nothing
// in it looks like input data, so the DLQ keeps the payload for replay.
const (
	ReasonMalformedJSON    Reason = "malformed_json"      // not JSON, not UTF-8, or trailing data
	ReasonWrongType        Reason = "wrong_type"          // a value of the wrong JSON type, including null
	ReasonUnknownField     Reason = "unknown_field"       // a key the schema does not define
	ReasonDuplicateKey     Reason = "duplicate_key"       // a key given twice in one object
	ReasonMissingField     Reason = "missing_field"       // a required key is absent
	ReasonForbiddenField   Reason = "forbidden_field"     // a key the category must not carry (user on tenant_profile)
	ReasonUnknownSchema    Reason = "unknown_schema"      // schema names no known category/version
	ReasonInvalidEventID   Reason = "invalid_event_id"    // event_id is not a lowercase canonical, non-nil UUID
	ReasonInvalidTenantID  Reason = "invalid_tenant_id"   // tenant_id does not match the id pattern
	ReasonInvalidTimestamp Reason = "invalid_timestamp"   // occurred_at is not RFC 3339 with an offset
	ReasonInvalidField     Reason = "invalid_field"       // a string outside its pattern or enumeration
	ReasonOutOfRange       Reason = "out_of_range"        // a number outside its bounds
	ReasonInconsistent     Reason = "inconsistent_fields" // fields that contradict each other
	ReasonTooOld           Reason = "too_old"             // occurred_at older than Limits.MaxAge
	ReasonInFuture         Reason = "in_future"           // occurred_at later than now + Limits.MaxSkew
)

// Reasons of class ClassInputData: something in the message looks like content
// or identity. The payload must be dropped; only a keyed hash may be kept.
const (
	ReasonEmail        Reason = "input_data.email"
	ReasonPhone        Reason = "input_data.phone"
	ReasonURL          Reason = "input_data.url"
	ReasonFreeText     Reason = "input_data.free_text"
	ReasonPersonalName Reason = "input_data.personal_name"
	ReasonFileName     Reason = "input_data.file_name"
	ReasonBlob         Reason = "input_data.blob"
	ReasonControlChar  Reason = "input_data.control_char"
	// Identifier classes a PII scanner knows, which fit in a short token.
	ReasonPaymentCard    Reason = "input_data.payment_card"    // card numbers (issuer prefix, length, Luhn)
	ReasonBankAccount    Reason = "input_data.bank_account"    // IBANs (mod 97)
	ReasonNationalID     Reason = "input_data.national_id"     // My Number, corporate number, SSN, passports, VINs
	ReasonPostalCode     Reason = "input_data.postal_code"     // 〒123-4567, 123-4567, ZIP+4
	ReasonNetworkAddress Reason = "input_data.network_address" // IPv4, IPv6, MAC, IMEI
	// ReasonOversize: a message over Limits.MaxBytes. A typical event is a few
	// hundred bytes; kilobytes are a content dump or a bug, and we would rather
	// drop such a payload than keep something we could not prove content-free.
	ReasonOversize Reason = "input_data.oversize"
)

// Reasons of the decision (pipeline/decision), given after the message was found to be a valid
// event: of class ClassPolicy unless said otherwise.
const (
	ReasonUnknownTenant Reason = "unknown_tenant"    // not in the registry (yet): kept, without user, for replay
	ReasonTerminated    Reason = "tenant_terminated" // the contract ended: the tenant is silent (policy 2(3))
	ReasonDeleted       Reason = "tenant_deleted"    // the tenant was deleted: nothing of it is kept, not even its id
	ReasonNoKey         Reason = "no_pseudonym_key"  // the tenant's keys were destroyed
	ReasonNoPurpose     Reason = "no_purpose"        // the policy allows this event no purpose at all
	// ReasonDuplicate (ClassDuplicate): a retried copy of a stored event.
	ReasonDuplicate Reason = "duplicate_event_id"
	// ReasonKeyMismatch (ClassMalformed): the raw topic is keyed by tenant id, so each
	// tenant's events are in one partition, which the aggregator's per-tenant bounds rely on;
	// a message keyed otherwise is refused.
	ReasonKeyMismatch Reason = "key_mismatch"
)

// InputDataPrefix starts the code of every ClassInputData reason.
const InputDataPrefix = "input_data."

var allReasons = []Reason{
	ReasonMalformedJSON, ReasonWrongType, ReasonUnknownField, ReasonDuplicateKey,
	ReasonMissingField, ReasonForbiddenField, ReasonUnknownSchema, ReasonInvalidEventID,
	ReasonInvalidTenantID, ReasonInvalidTimestamp, ReasonInvalidField, ReasonOutOfRange,
	ReasonInconsistent, ReasonTooOld, ReasonInFuture,
	ReasonEmail, ReasonPhone, ReasonURL, ReasonFreeText, ReasonPersonalName,
	ReasonFileName, ReasonBlob, ReasonControlChar, ReasonOversize,
	ReasonPaymentCard, ReasonBankAccount, ReasonNationalID, ReasonPostalCode, ReasonNetworkAddress,
}

// decisionReasons are the reasons of the decision, with their classes.
var decisionReasons = map[Reason]Class{
	ReasonUnknownTenant: ClassPolicy, ReasonTerminated: ClassPolicy, ReasonDeleted: ClassPolicy,
	ReasonNoKey: ClassPolicy, ReasonNoPurpose: ClassPolicy,
	ReasonDuplicate: ClassDuplicate, ReasonKeyMismatch: ClassMalformed,
}

// Reasons returns every reason Decode, Validate and the guard give (not the decision's), so
// that a metric can be initialised for each.
func Reasons() []Reason {
	return append([]Reason(nil), allReasons...)
}

// Known reports whether r is one of the reasons Decode, Validate and the guard give.
func (r Reason) Known() bool {
	for _, k := range allReasons {
		if k == r {
			return true
		}
	}
	return false
}

// Error lets a Reason be the target of errors.Is.
func (r Reason) Error() string { return string(r) }

// Class tells what kind of refusal r is, and so what the DLQ may keep of the message: a
// reason of the decision has its own class (ClassPolicy, ClassDuplicate, ClassMalformed);
// otherwise anything that is not a known malformed reason is ClassInputData: when in doubt,
// the payload goes.
func (r Reason) Class() Class {
	if c, ok := decisionReasons[r]; ok {
		return c
	}
	if strings.HasPrefix(string(r), InputDataPrefix) || !r.Known() {
		return ClassInputData
	}
	return ClassMalformed
}

// Class splits reasons by what happens to the payload.
type Class uint8

const (
	// ClassInputData: the payload is dropped; the DLQ gets the reason, tenant,
	// schema, event id and a keyed hash of the payload.
	ClassInputData Class = iota + 1
	// ClassMalformed: the payload is kept in the DLQ for replay.
	ClassMalformed
	// ClassPolicy: a valid event the policy or the registry refuses.
	ClassPolicy
	// ClassDuplicate: a retried copy of a stored event: nothing new to keep.
	ClassDuplicate
)

// String is the class's name in DLQ headers and rejections rows (their enum, in this order).
func (c Class) String() string {
	switch c {
	case ClassInputData:
		return "input_data"
	case ClassMalformed:
		return "malformed"
	case ClassPolicy:
		return "policy"
	case ClassDuplicate:
		return "duplicate"
	}
	return "unknown"
}

// Rejection is the error of Decode, Validate and the input-data guard.
//
// Field and Msg never quote a value from the message: rejections end up in logs
// and in the DLQ, and for input-data reasons quoting the value would store the
// very content we refuse. Field names only keys the schema defines; an unknown
// key is shown as "*".
type Rejection struct {
	Reason Reason
	Field  string // path of the offending value, e.g. "data.feature_id"; "" for the whole message
	Msg    string // what is wrong and what to do, for the collector team
}

func (r *Rejection) Error() string {
	var b strings.Builder
	b.WriteString("event rejected: ")
	b.WriteString(string(r.Reason))
	if r.Field != "" {
		b.WriteString(" at ")
		b.WriteString(r.Field)
	}
	if r.Msg != "" {
		b.WriteString(": ")
		b.WriteString(r.Msg)
	}
	return b.String()
}

// Unwrap exposes the reason to errors.Is.
func (r *Rejection) Unwrap() error { return r.Reason }

// Class is the class of the rejection's reason.
func (r *Rejection) Class() Class { return r.Reason.Class() }

func reject(reason Reason, field, msg string) *Rejection {
	return &Rejection{Reason: reason, Field: field, Msg: msg}
}
