package decision

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/guard"
	"github.com/shukei/shukei/registry"
)

// What a refusal may keep (docs/promises.md, "Nothing the policy forbids is kept").
//
// A refused message is kept (DLQ topic, rejections table) only in a form that is provably
// free of content: every key and every string value, at any depth, satisfies the strict
// grammar of its field (identifier pattern, enumeration, UUID, timestamp, bounded integer)
// *and* passes the input-data guard. Anything else — the value that broke its contract,
// unknown keys and whatever they hold, numbers out of their bounds, strings where a number
// or an object belongs — is replaced by its keyed hash. Keeping must not rest on the
// detectors recognising every kind of content: a value that breaks its field's contract is,
// by that fact alone, not known to be free of content. A message that is not a JSON object
// keeps no payload at all, only the rejection's metadata.
//
// The raw user id is never kept: it becomes its pseudonym when the tenant has a key and is
// not terminated, and is dropped otherwise.

// HashPrefix starts every value or key that a kept payload holds only as a keyed hash.
const HashPrefix = "hmac-sha256:"

// valueRule decides whether a JSON value at one path may be kept as it is.
type valueRule struct {
	str     func(string) bool      // nil: strings are not kept here
	num     func(json.Number) bool // nil: numbers are not kept here
	boolean bool
}

func keepString(path string, grammar func(string) bool) func(string) bool {
	return func(s string) bool { return grammar(s) && guard.CheckField(path, s) == nil }
}

func intIn(lo, hi int64) func(json.Number) bool {
	return func(n json.Number) bool {
		s := string(n)
		if len(s) == 0 || len(s) > 9 || strings.ContainsAny(s, ".eE+") {
			return false
		}
		v, err := strconv.ParseInt(s, 10, 64)
		return err == nil && v >= lo && v <= hi
	}
}

// schemaName accepts a known category with any major version ("feature_use/v2" from a newer
// collector is kept, so the event can be replayed once this build knows the version).
func schemaName(s string) bool {
	cat, v, ok := strings.Cut(s, "/v")
	if !ok || len(v) == 0 || len(v) > 3 || categoryKeys[cat] == nil {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

var envelopeRules = map[string]valueRule{
	"event_id":    {str: keepString("event_id", event.IsUUID)},
	"tenant_id":   {}, // Context.keptTenant: the rule depends on the registry
	"occurred_at": {str: event.IsTimestamp},
	"schema":      {str: schemaName},
	"source":      {str: keepString("source", event.IsID)},
}

var clientRules = map[string]valueRule{
	"os":          {str: func(s string) bool { return event.OS(s).Valid() }},
	"os_version":  {str: keepString("client.os_version", event.IsOSVersion)},
	"device_kind": {str: func(s string) bool { return event.DeviceKind(s).Valid() }},
}

// categoryKeys holds the data rules of each category, whatever its version.
var categoryKeys = map[string]map[string]valueRule{
	"tenant_profile": {
		"user_count":         {num: intIn(0, event.MaxUserCount)},
		"organization_count": {num: intIn(0, event.MaxOrganizationCount)},
	},
	"client_env": {
		"client_kind": {str: func(s string) bool { return event.ClientKind(s).Valid() }},
		"browser":     {str: func(s string) bool { return event.Browser(s).Valid() }},
	},
	"app_access": {
		"app_id": {str: keepString("data.app_id", event.IsID)},
		"action": {str: func(s string) bool { return event.Action(s).Valid() }},
	},
	"feature_use": {
		"feature_id":         {str: keepString("data.feature_id", event.IsID)},
		"count":              {num: intIn(0, event.MaxFeatureCount)},
		"records_registered": {num: intIn(0, event.MaxRecordsRegistered)},
	},
	"settings": {
		"setting_key":           {str: keepString("data.setting_key", event.IsID)},
		"value":                 {str: keepString("data.value", event.IsSettingToken), num: intIn(event.MinSettingInt, event.MaxSettingInt), boolean: true},
		"customization_present": {boolean: true},
		"customization_count":   {num: intIn(0, event.MaxCustomizationCount)},
	},
	"operation": {
		"operation_id": {str: keepString("data.operation_id", event.IsID)},
		"app_id":       {str: keepString("data.app_id", event.IsID)},
		"result_code":  {str: keepString("data.result_code", event.IsResultCode)},
		"request_id":   {str: keepString("data.request_id", event.IsRequestID)},
	},
}

// keptTenant reports whether a tenant id may be kept: it matches the id pattern, and passes
// the guard as a registered tenant's id when the registry knows it, as any other id when not.
func (c *Context) keptTenant(s string) bool {
	if !event.IsID(s) {
		return false
	}
	if _, ok := c.Tenants.Lookup(s); ok {
		return guard.CheckField("tenant_id", s) == nil
	}
	return guard.CheckUnknownTenant(s) == nil
}

// keepUser says what becomes of a refused message's user: the pseudonym's text, or "" to drop
// it. tenant and at are the message's, when they are valid.
type keepUser func(tenant string, at time.Time, user string) string

// keep returns the content-free form of a refused message, or nil when nothing of it has a
// structure that can be kept.
func (c *Context) keep(raw []byte, user keepUser) []byte {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil || top == nil {
		return nil
	}
	if _, err := dec.Token(); err == nil {
		return nil // trailing data: not one JSON value
	}
	out := make(map[string]any, len(top))
	var tenant string
	var at time.Time
	var category string
	if s, ok := top["tenant_id"].(string); ok && c.keptTenant(s) {
		tenant = s
	}
	if s, ok := top["occurred_at"].(string); ok && event.IsTimestamp(s) {
		at, _ = time.Parse(time.RFC3339Nano, s)
	}
	if s, ok := top["schema"].(string); ok && schemaName(s) {
		category, _, _ = strings.Cut(s, "/")
	}
	for k, v := range top {
		switch k {
		case "user":
			s, ok := v.(string)
			if !ok || tenant == "" || at.IsZero() {
				continue
			}
			if p := user(tenant, at, s); p != "" {
				out[k] = p
			}
		case "tenant_id":
			if tenant != "" {
				out[k] = tenant
			} else {
				out[k] = c.hashValue(v)
			}
		case "client":
			out[k] = c.keepObject(v, clientRules)
		case "data":
			out[k] = c.keepObject(v, categoryKeys[category])
		default:
			r, ok := envelopeRules[k]
			if !ok {
				out[c.hashText(k)] = c.hashValue(v)
				continue
			}
			out[k] = c.keepValue(v, r)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

func (c *Context) keepObject(v any, rules map[string]valueRule) any {
	obj, ok := v.(map[string]any)
	if !ok {
		return c.hashValue(v)
	}
	out := make(map[string]any, len(obj))
	for k, x := range obj {
		r, ok := rules[k]
		if !ok {
			out[c.hashText(k)] = c.hashValue(x)
			continue
		}
		out[k] = c.keepValue(x, r)
	}
	return out
}

func (c *Context) keepValue(v any, r valueRule) any {
	switch x := v.(type) {
	case nil:
		return nil
	case bool:
		if r.boolean {
			return x
		}
	case string:
		if r.str != nil && r.str(x) {
			return x
		}
	case json.Number:
		if r.num != nil && r.num(x) {
			return x
		}
	}
	return c.hashValue(v)
}

// hashValue is the keyed hash of a value that may not be kept: a string is hashed as its text,
// anything else as its JSON.
func (c *Context) hashValue(v any) string {
	if s, ok := v.(string); ok {
		return c.hashText(s)
	}
	b, _ := json.Marshal(v)
	return c.hashText(string(b))
}

func (c *Context) hashText(s string) string {
	m := hmac.New(sha256.New, c.HashKey)
	m.Write([]byte("kept-value\x00"))
	m.Write([]byte(s))
	return HashPrefix + hex.EncodeToString(m.Sum(nil)[:16])
}

// TenantTombstone is registry.TenantTombstone: a deleted tenant's keyed hash.
func TenantTombstone(hashKey []byte, tenant string) string {
	return registry.TenantTombstone(hashKey, tenant)
}
