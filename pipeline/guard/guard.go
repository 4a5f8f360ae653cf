// Package guard is the input-data guard: it rejects events whose values look
// like content or identity (input data under the vendor's data policy) rather
// than usage data.
//
// Every string is judged with knowledge of the field it sits in: a 32-digit
// hex string is expected in data.request_id and a smuggled blob in
// data.feature_id; a UUID is expected as a user id and 09012345678 is a phone
// number there. Bare host names (example.co.jp) pass: the policy names URLs
// with paths or queries, and a domain is configuration, not content. Tenant ids
// are not checked for personal names: they are the vendor's own names for its
// customers, often company names.
//
// Schema validation alone would reject many leaks with a generic reason, and
// the DLQ keeps the payload of such rejections for replay: a privacy leak. So
// the guard also looks into messages that fail to decode or validate (ScanRaw),
// and Inspect, the one entry point for the pipeline, lets an input-data finding
// anywhere in a message take precedence over any other reason.
//
// Everything here is pure and safe for concurrent use: the word lists are built
// at package initialisation and only read afterwards.
package guard

import (
	"errors"
	"time"

	"github.com/shukei/shukei/event"
)

// Inspect decides a raw message's fate: decode, validate, guard. It returns the
// event and nil when the event may be stored. Otherwise it returns a
// rejection, and an Event holding at most the envelope fields that are valid
// on their own (event id, tenant, schema, occurred_at) for the DLQ record,
// never a payload or user.
//
// Whatever the first failure, a message in which the guard finds input data
// anywhere (keys included, in duplicates, past a syntax error) is rejected
// with the input-data reason, so that the DLQ drops its payload.
func Inspect(b []byte, now time.Time, lim event.Limits) (event.Event, *event.Rejection) {
	lim = lim.WithDefaults()
	if len(b) > lim.MaxBytes {
		if r := ScanRaw(b); r != nil {
			return event.Event{}, r
		}
		return event.Event{}, &event.Rejection{Reason: event.ReasonOversize, Msg: "message larger than the event size limit; an event is a few hundred bytes"}
	}
	ev, err := event.Decode(b)
	if err != nil {
		if r := ScanRaw(b); r != nil {
			return event.Event{}, r
		}
		return event.Event{}, asRejection(err)
	}
	if err := event.Validate(&ev, now, lim); err != nil {
		// Decoding succeeded, so every string is in a typed field: Check sees them all.
		if r := Check(&ev); r != nil {
			return metadata(&ev), r
		}
		return metadata(&ev), asRejection(err)
	}
	if r := Check(&ev); r != nil {
		return metadata(&ev), r
	}
	return ev, nil
}

func asRejection(err error) *event.Rejection {
	var r *event.Rejection
	if errors.As(err, &r) {
		return r
	}
	// Decode and Validate only return *Rejection; anything else is a bug, and
	// an unknown reason fails safe to the input-data class.
	return &event.Rejection{Reason: "internal_error", Msg: "unexpected error type"}
}

// metadata keeps what a DLQ record may hold about a rejected event.
func metadata(ev *event.Event) event.Event {
	var m event.Event
	if event.IsEventID(ev.EventID) {
		m.EventID = ev.EventID
	}
	if event.IsID(ev.TenantID) {
		m.TenantID = ev.TenantID
	}
	if ev.Schema.Known() {
		m.Schema = ev.Schema
	}
	m.OccurredAt = ev.OccurredAt
	return m
}

// Check looks at every string of a decoded event, valid or not, and returns an
// input-data rejection for the first that looks like content, or nil.
func Check(ev *event.Event) *event.Rejection {
	e := &ev.Envelope
	if r := check("event_id", kindUUID, e.EventID); r != nil {
		return r
	}
	if r := check("tenant_id", kindTenant, e.TenantID); r != nil {
		return r
	}
	if r := check("schema", kindEnum, string(e.Schema)); r != nil {
		return r
	}
	if r := check("source", kindID, e.Source); r != nil {
		return r
	}
	if r := check("user", kindUser, e.User); r != nil {
		return r
	}
	if r := check("client.os", kindEnum, string(e.Client.OS)); r != nil {
		return r
	}
	if r := check("client.os_version", kindVersion, e.Client.OSVersion); r != nil {
		return r
	}
	if r := check("client.device_kind", kindEnum, string(e.Client.DeviceKind)); r != nil {
		return r
	}
	switch d := ev.Data.(type) {
	case *event.ClientEnv:
		if d != nil {
			if r := check("data.client_kind", kindEnum, string(d.ClientKind)); r != nil {
				return r
			}
			return check("data.browser", kindEnum, string(d.Browser))
		}
	case *event.AppAccess:
		if d != nil {
			if r := check("data.app_id", kindID, d.AppID); r != nil {
				return r
			}
			return check("data.action", kindEnum, string(d.Action))
		}
	case *event.FeatureUse:
		if d != nil {
			return check("data.feature_id", kindID, d.FeatureID)
		}
	case *event.Settings:
		if d != nil {
			if r := check("data.setting_key", kindID, d.SettingKey); r != nil {
				return r
			}
			if d.Value.Kind == event.ValueToken {
				return check("data.value", kindToken, d.Value.Token)
			}
		}
	case *event.Operation:
		if d != nil {
			if r := check("data.operation_id", kindID, d.OperationID); r != nil {
				return r
			}
			if r := check("data.app_id", kindID, d.AppID); r != nil {
				return r
			}
			if r := check("data.result_code", kindToken, d.ResultCode); r != nil {
				return r
			}
			return check("data.request_id", kindRequestID, d.RequestID)
		}
	}
	return nil
}

// CheckField checks one value as the guard checks the field at path (such as
// "data.feature_id" or "user"). Paths the schemas do not define are checked
// with no shape expected, as ScanRaw checks unknown fields.
func CheckField(path, value string) *event.Rejection {
	k, ok := pathKinds[path]
	if !ok {
		path = "*"
	}
	return check(path, k, value)
}

// CheckUnknownTenant checks a tenant id that no registry knows. Registered tenant ids are the
// vendor's own names for its customers and skip the personal-name detectors; an unknown one is
// whatever its sender wrote, so it is held to the guard of any other id.
func CheckUnknownTenant(s string) *event.Rejection { return check("tenant_id", kindID, s) }

func check(path string, k kind, s string) *event.Rejection {
	if s == "" {
		return nil
	}
	if reason := classify(k, s); reason != "" {
		return rejection(reason, path)
	}
	return nil
}

// The messages never quote the value: they are stored in the DLQ, which must
// not hold what the guard refused.
var messages = map[event.Reason]string{
	event.ReasonEmail:          "looks like an email address; send opaque ids, never contact details",
	event.ReasonPhone:          "looks like a phone number",
	event.ReasonURL:            "looks like a URL with a path or query",
	event.ReasonFreeText:       "looks like free text; only ids, enumerated tokens and numbers are allowed",
	event.ReasonPersonalName:   "looks like a personal name; send the opaque user id instead",
	event.ReasonFileName:       "looks like a file name or path",
	event.ReasonBlob:           "looks like encoded or undecodable data",
	event.ReasonControlChar:    "contains control, zero-width or bidi characters",
	event.ReasonPaymentCard:    "looks like a payment card number",
	event.ReasonBankAccount:    "looks like a bank account number (IBAN)",
	event.ReasonNationalID:     "looks like a national, corporate, passport or vehicle id number",
	event.ReasonPostalCode:     "looks like a postal code",
	event.ReasonNetworkAddress: "looks like an IP, MAC or device (IMEI) address",
}

func rejection(reason event.Reason, path string) *event.Rejection {
	return &event.Rejection{Reason: reason, Field: path, Msg: messages[reason]}
}
