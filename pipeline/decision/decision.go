// Package decision is the one function that decides an event's fate, shared by the processor
// and the aggregator (DESIGN.md §2): decode → validate → input-data guard → pseudonymise → tag
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
	"github.com/shukei/shukei/pipeline/guard"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/schemas/event"
)

// Reasons added by this stage, after the event itself was found valid.
const (
	ReasonUnknownTenant = "unknown_tenant"   // not in the registry (yet): kept for replay
	ReasonNoKey         = "no_pseudonym_key" // the tenant's keys were destroyed
	ReasonNoPurpose     = "no_purpose"       // the policy allows this event no purpose at all
	ReasonDuplicate     = "duplicate_event_id"
)

// Class of a rejection: what may be kept of the message.
type Class uint8

// The classes, in the order of the rejections table's enum.
const (
	ClassInputData Class = 1 // payload dropped, keyed hash kept
	ClassMalformed Class = 2 // payload kept for replay
	ClassPolicy    Class = 3 // valid event the policy or registry refuses: payload kept for replay
	ClassDuplicate Class = 4 // a retried copy of a stored event: nothing new to keep
)

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

// Rejection says why a message was not stored and what may be kept of it.
type Rejection struct {
	Reason  string
	Class   Class
	Field   string
	Tenant  string // only when it is a valid tenant id and not itself the offending value
	Schema  string
	EventID string // only a valid UUID
	Hash    string // keyed hash of the payload (always)
	Payload []byte // nil for ClassInputData and ClassDuplicate
}

// Decide runs the whole decision for one raw message.
func Decide(raw []byte, c *Context) (Tagged, *Rejection) {
	ev, rej := guard.Inspect(raw, c.Now, c.Limits)
	if rej != nil {
		r := &Rejection{Reason: string(rej.Reason), Field: rej.Field, Hash: c.hash(raw)}
		if rej.Class() == event.ClassInputData {
			r.Class = ClassInputData
		} else {
			r.Class, r.Payload = ClassMalformed, raw
		}
		r.fillIDs(ev, rej.Field)
		return Tagged{}, r
	}
	refuse := func(reason string) (Tagged, *Rejection) {
		r := &Rejection{Reason: reason, Class: ClassPolicy, Hash: c.hash(raw), Payload: raw}
		r.fillIDs(ev, "")
		return Tagged{}, r
	}
	t, ok := c.Tenants.Lookup(ev.TenantID)
	if !ok {
		return refuse(ReasonUnknownTenant)
	}
	out := Tagged{Event: ev, Tenant: t}
	if ev.User != "" {
		p, err := c.Keyring.Pseudonymize(ev.TenantID, ev.OccurredAt, ev.User)
		if err != nil {
			return refuse(ReasonNoKey)
		}
		out.Pseudonym = p
	}
	out.Purposes, out.PolicyVersion = c.Policy.Tag(Category(ev.Schema), t, ev.OccurredAt)
	if out.Purposes == 0 {
		return refuse(ReasonNoPurpose)
	}
	// The user id has served its purpose; nothing downstream may see it.
	out.Event.User = ""
	return out, nil
}

// Duplicate builds the rejection of a retried copy of an already stored event.
func Duplicate(t Tagged, raw []byte, c *Context) *Rejection {
	r := &Rejection{Reason: ReasonDuplicate, Class: ClassDuplicate, Hash: c.hash(raw)}
	r.fillIDs(t.Event, "")
	return r
}

func (r *Rejection) fillIDs(ev event.Event, badField string) {
	if badField != "tenant_id" && validID(ev.TenantID) {
		r.Tenant = ev.TenantID
	}
	if ev.Schema.Known() {
		r.Schema = string(ev.Schema)
	}
	if validUUID(ev.EventID) {
		r.EventID = ev.EventID
	}
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

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || i > 0 && (b == '_' || b == '.' || b == '-')) {
			return false
		}
	}
	return true
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		b := s[i]
		switch i {
		case 8, 13, 18, 23:
			if b != '-' {
				return false
			}
		default:
			if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'f') {
				return false
			}
		}
	}
	return true
}
