// Package decision is the one function that decides an event's fate, shared by the processor
// and the aggregator (docs/DESIGN.md §2): decode → validate → input-data guard → pseudonymise → tag
// purposes under the policy. It returns a tagged event ready to store, or a rejection with its
// reason. No other code repeats any of these steps.
package decision

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/guard"
	"github.com/shukei/shukei/registry"
)

// Tagger decides the purposes an event may serve: the policy, versioned, applied to the
// tenant's status and consents at the event's time.
type Tagger interface {
	Tag(category string, t *registry.Tenant, at time.Time) (purposes uint16, version uint16)
}

// Context is what the decision needs besides the message. It is read-only during a decision,
// so one Context serves concurrent decisions.
type Context struct {
	Now     time.Time
	Limits  event.Limits
	Tenants *registry.Snapshot
	Keyring *pseudonym.Keyring
	Policy  Tagger
	// HashKey keys the hash kept in place of a dropped payload, so the hash cannot be
	// reversed by guessing likely contents.
	HashKey []byte
}

// Tagged is an accepted event with what the pipeline adds to it.
type Tagged struct {
	Event         event.Event
	Pseudonym     pseudonym.Pseudonym // zero for tenant-level categories
	Tenant        *registry.Tenant
	Purposes      uint16
	PolicyVersion uint16
}

// Rejection says why a message was not stored and what may be kept of it. Its reasons are
// event's (event.Reason: the guard's, and the decision's own such as event.ReasonUnknownTenant),
// and its class is the reason's (Reason.Class). What may be kept of the message is the same
// rule for every class (keep.go), except that a duplicate keeps nothing: the stored copy is
// the event.
type Rejection struct {
	Reason  event.Reason
	Class   event.Class
	Field   string // a schema path ("*" for a key the schemas do not define)
	Tenant  string // only when it is a valid tenant id that passes the guard and is not itself the offending value
	Schema  string
	EventID string // only a valid UUID that passes the guard
	Hash    string // keyed hash of the whole message (always)
	// Payload is the message's content-free form (keep.go), nil when nothing of it has a
	// structure that can be kept, and for duplicates.
	Payload []byte
}

// DecideMessage is Decide for a message of the raw topic: an event whose message key is not
// its tenant id is refused (key_mismatch, kept like a malformed message: replaying it writes it
// again keyed by its tenant), whoever wrote it — a tenant's events spread over partitions
// would each be bounded per partition, not once, by the aggregator.
//
// The key is checked after the whole decision, not before: a refusal it makes first (a deleted
// or terminated tenant, content) keeps less than key_mismatch would — a deleted tenant's event
// under a wrong key must still keep neither payload nor tenant id.
func DecideMessage(key, raw []byte, c *Context) (Tagged, *Rejection) {
	t, rej := Decide(raw, c)
	if rej != nil || string(key) == t.Event.TenantID {
		return t, rej
	}
	r := &Rejection{Reason: event.ReasonKeyMismatch, Class: event.ReasonKeyMismatch.Class(), Field: "tenant_id", Hash: c.hash(raw)}
	c.fillIDs(r, t.Event, "")
	r.Payload = c.keep(raw, c.pseudonymOf)
	return Tagged{}, c.forgetDeleted(r)
}

// Decide runs the whole decision for one raw message.
func Decide(raw []byte, c *Context) (Tagged, *Rejection) {
	t, r := decide(raw, c)
	return t, c.forgetDeleted(r)
}

// forgetDeleted keeps nothing of a deleted tenant, or of one being deleted, in a refusal of
// any reason (content refused before its tenant was looked at, say): no tenant id, no payload.
// A refusal that kept them would be a row of the tenant after its deletion (promise 8).
func (c *Context) forgetDeleted(r *Rejection) *Rejection {
	if r == nil || r.Tenant == "" {
		return r
	}
	t, ok := c.Tenants.Lookup(r.Tenant)
	if (ok && t.Tombstoned) || (!ok && c.Tenants.Deleted(TenantTombstone(c.HashKey, r.Tenant))) {
		r.Tenant, r.Payload = "", nil
	}
	return r
}

func decide(raw []byte, c *Context) (Tagged, *Rejection) {
	ev, rej := guard.Inspect(raw, c.Now, c.Limits)
	if rej != nil {
		r := &Rejection{Reason: rej.Reason, Class: rej.Class(), Field: keptPath(rej.Field), Hash: c.hash(raw)}
		c.fillIDs(r, ev, rej.Field)
		r.Payload = c.keep(raw, c.pseudonymOf)
		return Tagged{}, r
	}
	refuse := func(reason event.Reason, user keepUser) (Tagged, *Rejection) {
		r := &Rejection{Reason: reason, Class: reason.Class(), Hash: c.hash(raw)}
		c.fillIDs(r, ev, "")
		r.Payload = c.keep(raw, user)
		return Tagged{}, r
	}
	t, ok := c.Tenants.Lookup(ev.TenantID)
	// Deleted, or being deleted: a tenant keeps its registry row until the end of its deletion
	// (retention deletes every table's rows after the tombstone), and its events are refused
	// from the tombstone on.
	if (ok && t.Tombstoned) || (!ok && c.Tenants.Deleted(TenantTombstone(c.HashKey, ev.TenantID))) {
		// A deleted tenant's events still in Kafka: the refusal keeps no payload and no
		// tenant id (its keyed hash is the whole-message Hash), so the deletion stays whole.
		out, r := refuse(event.ReasonDeleted, dropUser)
		r.Payload, r.Tenant = nil, ""
		return out, r
	}
	if !ok {
		return refuse(event.ReasonUnknownTenant, dropUser)
	}
	if t.Silent(ev.OccurredAt) { // terminated, or the event is from after the contract end
		// Terminated means silent: its usage serves no purpose any more (2(3)), so nothing of
		// the event is kept, not even its content-free form; only the refusal's metadata.
		out, r := refuse(event.ReasonTerminated, dropUser)
		r.Payload = nil
		return out, r
	}
	out := Tagged{Event: ev, Tenant: t}
	if ev.User != "" {
		p, err := c.Keyring.Pseudonymize(ev.TenantID, ev.OccurredAt, ev.User)
		if err != nil {
			return refuse(event.ReasonNoKey, dropUser)
		}
		out.Pseudonym = p
	}
	out.Purposes, out.PolicyVersion = c.Policy.Tag(Category(ev.Schema), t, ev.OccurredAt)
	if out.Purposes == 0 {
		return refuse(event.ReasonNoPurpose, c.pseudonymOf)
	}
	// The user id has served its purpose; nothing downstream may see it.
	out.Event.User = ""
	return out, nil
}

// pseudonymOf is what a refusal keeps of the user of a known, active tenant: its pseudonym,
// as hex. A tenant that is unknown, terminated or without keys keeps no user at all.
func (c *Context) pseudonymOf(tenant string, at time.Time, user string) string {
	t, ok := c.Tenants.Lookup(tenant)
	if !ok || t.Silent(at) {
		return ""
	}
	p, err := c.Keyring.Pseudonymize(tenant, at, user)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(p[:])
}

func dropUser(string, time.Time, string) string { return "" }

// Duplicate builds the rejection of a retried copy of an already stored event.
func Duplicate(t Tagged, raw []byte, c *Context) *Rejection {
	r := &Rejection{Reason: event.ReasonDuplicate, Class: event.ReasonDuplicate.Class(), Hash: c.hash(raw)}
	c.fillIDs(r, t.Event, "")
	return r
}

func (c *Context) fillIDs(r *Rejection, ev event.Event, badField string) {
	if badField != "tenant_id" && c.keptTenant(ev.TenantID) {
		r.Tenant = ev.TenantID
	}
	if ev.Schema.Known() {
		r.Schema = string(ev.Schema)
	}
	if envelopeRules["event_id"].str(ev.EventID) {
		r.EventID = ev.EventID
	}
}

// keptPath returns a rejection's field path when it is made of the schemas' own keys, and "*"
// otherwise: a path must never carry a key the message made up.
func keptPath(p string) string {
	if p == "" {
		return ""
	}
	for _, seg := range strings.Split(p, ".") {
		if seg != "*" && !schemaKey(seg) {
			return "*"
		}
	}
	return p
}

func schemaKey(k string) bool {
	if _, ok := envelopeRules[k]; ok || k == "user" || k == "client" || k == "data" {
		return true
	}
	if _, ok := clientRules[k]; ok {
		return true
	}
	for _, rules := range categoryKeys {
		if _, ok := rules[k]; ok {
			return true
		}
	}
	return false
}

func (c *Context) hash(raw []byte) string {
	m := hmac.New(sha256.New, c.HashKey)
	m.Write(raw)
	return hex.EncodeToString(m.Sum(nil))
}

// Category is the category part of a schema name: "feature_use/v1" → "feature_use".
func Category(s event.Schema) string {
	cat, _, _ := strings.Cut(string(s), "/")
	return cat
}

// SchemaVersion is the major version of a schema name: "feature_use/v1" → 1.
func SchemaVersion(s event.Schema) uint8 {
	_, v, _ := strings.Cut(string(s), "/v")
	n, _ := strconv.Atoi(v)
	return uint8(n)
}

// OSMajor generalises an OS version to its major number ("17.4.1" → 17).
func OSMajor(v string) uint16 {
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	if err != nil || n < 0 || n > 65535 {
		return 0
	}
	return uint16(n)
}
