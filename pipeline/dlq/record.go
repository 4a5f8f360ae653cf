package dlq

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/event"
)

// The header keys of a DLQ record, as the processor writes them (pipeline/processor,
// dlqMessage). Every one but Kept is always present, possibly empty.
const (
	HeaderReason      = "reason"
	HeaderClass       = "class"
	HeaderField       = "field"
	HeaderTenant      = "tenant_id"
	HeaderSchema      = "schema"
	HeaderEventID     = "event_id"
	HeaderPayloadHMAC = "payload_hmac"
	HeaderKept        = "kept"
)

// requiredHeaders are the headers every DLQ record carries.
var requiredHeaders = []string{HeaderReason, HeaderClass, HeaderField, HeaderTenant, HeaderSchema, HeaderEventID, HeaderPayloadHMAC}

// The classes of a rejection as DLQ headers name them (event.Class's names).
var (
	ClassInputData = event.ClassInputData.String()
	ClassMalformed = event.ClassMalformed.String()
	ClassPolicy    = event.ClassPolicy.String()
	ClassDuplicate = event.ClassDuplicate.String()
)

// What a record kept of the refused message: the value of the kept header.
const (
	KeptPayload  = "payload"  // the value is the content-free payload (a JSON object)
	KeptMetadata = "metadata" // the value is empty: headers only
	// KeptLegacy: the record has no kept header. It was written before kept payloads were made
	// content-free, so its value may hold the raw message (and a raw user id): it is counted,
	// never shown and never replayed.
	KeptLegacy = "legacy"
)

// Marker starts every keyed hash that stands in for a value in a content-free payload. A
// payload holding one is incomplete: it cannot be replayed.
const Marker = "hmac-sha256:"

// ReasonDuplicate is the processor's reason for a retried copy of a stored event.
const ReasonDuplicate = string(event.ReasonDuplicate)

// Position is where a message sat in the raw topic: a DLQ record's key, written
// "<topic>/<partition>/<offset>".
type Position struct {
	Topic     string
	Partition int
	Offset    int64
}

func (p Position) String() string {
	return p.Topic + "/" + strconv.Itoa(p.Partition) + "/" + strconv.FormatInt(p.Offset, 10)
}

// ParseKey parses a DLQ key. Only the canonical form is accepted (a valid Kafka topic name,
// decimal partition and offset without sign or leading zeros), so one position has one key.
func ParseKey(s string) (Position, error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return Position{}, fmt.Errorf("DLQ key %s: want <raw topic>/<partition>/<offset>", quoteShort(s))
	}
	j := strings.LastIndexByte(s[:i], '/')
	if j < 0 {
		return Position{}, fmt.Errorf("DLQ key %s: want <raw topic>/<partition>/<offset>", quoteShort(s))
	}
	topic, ps, os := s[:j], s[j+1:i], s[i+1:]
	if !validTopic(topic) {
		return Position{}, fmt.Errorf("DLQ key %s: the topic part is not a Kafka topic name", quoteShort(s))
	}
	part, ok := canonicalInt(ps, 1<<31-1)
	if !ok {
		return Position{}, fmt.Errorf("DLQ key %s: the partition must be a decimal number", quoteShort(s))
	}
	off, ok := canonicalInt(os, 1<<63-1)
	if !ok {
		return Position{}, fmt.Errorf("DLQ key %s: the offset must be a decimal number", quoteShort(s))
	}
	return Position{Topic: topic, Partition: int(part), Offset: off}, nil
}

// canonicalInt parses a non-negative decimal without sign or leading zeros, at most max.
func canonicalInt(s string, max int64) (int64, bool) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > max {
		return 0, false
	}
	return n, true
}

// validTopic reports whether s is a legal Kafka topic name.
func validTopic(s string) bool {
	if s == "" || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// quoteShort quotes an operator's argument for an error message, cut to a readable length.
// It is used only for what the operator typed, never for a record's content.
func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strconv.Quote(s)
}

// Record is one DLQ record, parsed and checked. Every string field passed its pattern, so it
// may be printed: reasons, classes, field paths, ids and hashes, never a value of the message.
type Record struct {
	Key Position // the refused message's position in the raw topic
	// Where the record itself sits in the DLQ topic, and its Kafka time.
	Partition int
	Offset    int64
	Time      time.Time

	Reason      string
	Class       string
	Field       string // path of the offending value, "" for the whole message
	Tenant      string // "" when unknown or itself the offending value
	Schema      string
	EventID     string
	PayloadHMAC string
	Kept        string // KeptPayload, KeptMetadata or KeptLegacy
	Payload     []byte // the content-free payload when Kept is KeptPayload; nil otherwise
}

// Malformed is why a DLQ record could not be parsed. Code is a short, fixed identifier
// (bad_key, missing_header.reason, bad_header.class, …) that names what is wrong without
// quoting anything from the record.
type Malformed struct {
	Code string
	Msg  string
}

func (m *Malformed) Error() string { return "malformed DLQ record: " + m.Code + ": " + m.Msg }

func malformed(code, msg string) *Malformed { return &Malformed{Code: code, Msg: msg} }

// Parse checks one DLQ message and returns its record. The error is always a *Malformed; it
// never quotes the message.
func Parse(m kafka.Message) (Record, error) {
	r := Record{Partition: m.Partition, Offset: m.Offset, Time: m.Time}
	key, err := ParseKey(string(m.Key))
	if err != nil {
		return r, malformed("bad_key", "the key is not <raw topic>/<partition>/<offset>")
	}
	r.Key = key

	h := map[string]string{}
	for _, x := range m.Headers {
		switch x.Key {
		case HeaderReason, HeaderClass, HeaderField, HeaderTenant, HeaderSchema, HeaderEventID, HeaderPayloadHMAC, HeaderKept:
			if _, dup := h[x.Key]; dup {
				return r, malformed("repeated_header."+x.Key, "the header "+x.Key+" appears more than once")
			}
			h[x.Key] = string(x.Value)
		}
		// Other headers are ignored: a later processor may add some.
	}
	for _, k := range requiredHeaders {
		if _, ok := h[k]; !ok {
			return r, malformed("missing_header."+k, "the header "+k+" is missing")
		}
	}
	r.Reason, r.Class, r.Field = h[HeaderReason], h[HeaderClass], h[HeaderField]
	r.Tenant, r.Schema, r.EventID, r.PayloadHMAC = h[HeaderTenant], h[HeaderSchema], h[HeaderEventID], h[HeaderPayloadHMAC]
	checks := []struct {
		name string
		ok   bool
	}{
		{HeaderReason, validReason(r.Reason)},
		{HeaderClass, validClass(r.Class)},
		{HeaderField, validField(r.Field)},
		{HeaderTenant, r.Tenant == "" || event.IsID(r.Tenant)},
		{HeaderSchema, r.Schema == "" || validSchema(r.Schema)},
		{HeaderEventID, r.EventID == "" || event.IsUUID(r.EventID)},
		{HeaderPayloadHMAC, validHMAC(r.PayloadHMAC)},
	}
	for _, c := range checks {
		if !c.ok {
			return r, malformed("bad_header."+c.name, "the header "+c.name+" is not in its expected form")
		}
	}

	kept, hasKept := h[HeaderKept]
	switch {
	case !hasKept:
		r.Kept = KeptLegacy // the value, if any, is not trusted to be content-free
	case kept == KeptPayload:
		if !isJSONObject(m.Value) {
			return r, malformed("bad_payload", "kept=payload but the value is not a JSON object")
		}
		r.Kept, r.Payload = KeptPayload, m.Value
	case kept == KeptMetadata:
		if len(m.Value) != 0 {
			return r, malformed("unexpected_payload", "kept=metadata but the value is not empty")
		}
		r.Kept = KeptMetadata
	default:
		return r, malformed("bad_header."+HeaderKept, "the header kept is neither payload nor metadata")
	}
	return r, nil
}

// isJSONObject reports whether b is one valid JSON object.
func isJSONObject(b []byte) bool {
	t := bytes.TrimSpace(b)
	return len(t) >= 2 && t[0] == '{' && json.Valid(t)
}

// validReason: reasons are lowercase codes such as unknown_tenant or input_data.email.
func validReason(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validClass(s string) bool {
	switch s {
	case ClassInputData, ClassMalformed, ClassPolicy, ClassDuplicate:
		return true
	}
	return false
}

// validField: a path of schema keys (data.feature_id), "*" standing for an unknown key.
func validField(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '*' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// validSchema: category/vN, as in the envelope.
func validSchema(s string) bool {
	cat, v, ok := strings.Cut(s, "/v")
	if !ok || cat == "" || len(cat) > 32 || v == "" || len(v) > 3 {
		return false
	}
	for i := 0; i < len(cat); i++ {
		if c := cat[i]; !(c >= 'a' && c <= 'z' || c == '_') {
			return false
		}
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// validHMAC: a keyed hash in hex, optionally with the marker; empty is tolerated.
func validHMAC(s string) bool {
	s = strings.TrimPrefix(s, Marker)
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
