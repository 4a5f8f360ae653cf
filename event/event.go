// Package event is the Go side of Shukei's event contract (the JSON Schemas in
// schemas/events): the types, a strict decoder and a pure validator.
//
// The decision order for a raw message is Decode, then Validate, then the
// input-data guard (package pipeline/guard, whose Inspect runs all three with
// the right precedence). Decode and Validate are pure and safe for concurrent use.
package event

import (
	"encoding/json"
	"strconv"
	"time"
)

// Schema names a category and its major version, as in the envelope's "schema".
type Schema string

// The known category versions. A new major version is a new constant, a new
// schema file and a new payload type; see schemas/events/README.md.
const (
	SchemaTenantProfileV1 Schema = "tenant_profile/v1"
	SchemaClientEnvV1     Schema = "client_env/v1"
	SchemaAppAccessV1     Schema = "app_access/v1"
	SchemaFeatureUseV1    Schema = "feature_use/v1"
	SchemaSettingsV1      Schema = "settings/v1"
	SchemaOperationV1     Schema = "operation/v1"
)

var allSchemas = []Schema{
	SchemaTenantProfileV1, SchemaClientEnvV1, SchemaAppAccessV1,
	SchemaFeatureUseV1, SchemaSettingsV1, SchemaOperationV1,
}

// Schemas returns the known category versions.
func Schemas() []Schema { return append([]Schema(nil), allSchemas...) }

// Known reports whether s is a category version this build understands.
func (s Schema) Known() bool {
	switch s {
	case SchemaTenantProfileV1, SchemaClientEnvV1, SchemaAppAccessV1,
		SchemaFeatureUseV1, SchemaSettingsV1, SchemaOperationV1:
		return true
	}
	return false
}

// TenantLevel reports whether events of s describe a whole tenant rather than
// what a user did. Such events carry no user (it must be absent: a tenant-wide
// count has no actor, and a user id there would only be a linkage risk) and may
// omit the client.
func (s Schema) TenantLevel() bool { return s == SchemaTenantProfileV1 }

// OS is the envelope's client.os.
type OS string

// The operating system families.
const (
	OSWindows  OS = "windows"
	OSMacOS    OS = "macos"
	OSLinux    OS = "linux"
	OSIOS      OS = "ios"
	OSAndroid  OS = "android"
	OSChromeOS OS = "chromeos"
	OSOther    OS = "other"
)

// Valid reports whether o is one of the enumerated values.
func (o OS) Valid() bool {
	switch o {
	case OSWindows, OSMacOS, OSLinux, OSIOS, OSAndroid, OSChromeOS, OSOther:
		return true
	}
	return false
}

// DeviceKind is the envelope's client.device_kind.
type DeviceKind string

// The device kinds.
const (
	DeviceDesktop DeviceKind = "desktop"
	DeviceMobile  DeviceKind = "mobile"
	DeviceTablet  DeviceKind = "tablet"
	DeviceOther   DeviceKind = "other"
)

// Valid reports whether d is one of the enumerated values.
func (d DeviceKind) Valid() bool {
	switch d {
	case DeviceDesktop, DeviceMobile, DeviceTablet, DeviceOther:
		return true
	}
	return false
}

// ClientKind is client_env/v1's client_kind.
type ClientKind string

// The client kinds.
const (
	ClientBrowser    ClientKind = "browser"
	ClientDesktopApp ClientKind = "desktop_app"
	ClientMobileApp  ClientKind = "mobile_app"
	ClientAPI        ClientKind = "api"
)

// Valid reports whether k is one of the enumerated values.
func (k ClientKind) Valid() bool {
	switch k {
	case ClientBrowser, ClientDesktopApp, ClientMobileApp, ClientAPI:
		return true
	}
	return false
}

// Browser is client_env/v1's browser family.
type Browser string

// The browser families.
const (
	BrowserChrome  Browser = "chrome"
	BrowserEdge    Browser = "edge"
	BrowserFirefox Browser = "firefox"
	BrowserSafari  Browser = "safari"
	BrowserOther   Browser = "other"
	BrowserNone    Browser = "none"
)

// Valid reports whether b is one of the enumerated values.
func (b Browser) Valid() bool {
	switch b {
	case BrowserChrome, BrowserEdge, BrowserFirefox, BrowserSafari, BrowserOther, BrowserNone:
		return true
	}
	return false
}

// Action is app_access/v1's action.
type Action string

// The access actions.
const (
	ActionOpen   Action = "open"
	ActionView   Action = "view"
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
	ActionExport Action = "export"
	ActionImport Action = "import"
	ActionSearch Action = "search"
	ActionShare  Action = "share"
)

// Valid reports whether a is one of the enumerated values.
func (a Action) Valid() bool {
	switch a {
	case ActionOpen, ActionView, ActionCreate, ActionUpdate, ActionDelete,
		ActionExport, ActionImport, ActionSearch, ActionShare:
		return true
	}
	return false
}

// Client is the envelope's client. The zero Client means "absent".
type Client struct {
	OS         OS         `json:"os"`
	OSVersion  string     `json:"os_version,omitempty"` // "" when absent
	DeviceKind DeviceKind `json:"device_kind"`
}

// Envelope holds the fields every event has.
type Envelope struct {
	EventID    string    `json:"event_id"`
	TenantID   string    `json:"tenant_id"`
	OccurredAt time.Time `json:"occurred_at"`
	Schema     Schema    `json:"schema"`
	Source     string    `json:"source"`
	User       string    `json:"user,omitempty"`  // "" when absent (tenant-level categories)
	Client     Client    `json:"client,omitzero"` // zero when absent
}

// Payload is the category-specific part of an event: one of *TenantProfile,
// *ClientEnv, *AppAccess, *FeatureUse, *Settings, *Operation.
type Payload interface {
	// Schema is the category version the payload belongs to.
	Schema() Schema
	payload()
}

// Event is a decoded event. json.Marshal of an Event gives its canonical JSON,
// which decodes back to an equal Event.
type Event struct {
	Envelope
	Data Payload `json:"data"`
}

// UnmarshalJSON decodes with Decode's strictness, so that an Event inside a
// larger document is held to the same contract.
func (ev *Event) UnmarshalJSON(b []byte) error {
	e, err := Decode(b)
	if err != nil {
		return err
	}
	*ev = e
	return nil
}

// TenantProfile is tenant_profile/v1.
type TenantProfile struct {
	UserCount         int64 `json:"user_count"`
	OrganizationCount int64 `json:"organization_count"`
}

// ClientEnv is client_env/v1.
type ClientEnv struct {
	ClientKind ClientKind `json:"client_kind"`
	Browser    Browser    `json:"browser"`
}

// AppAccess is app_access/v1.
type AppAccess struct {
	AppID  string `json:"app_id"`
	Action Action `json:"action"`
}

// FeatureUse is feature_use/v1.
type FeatureUse struct {
	FeatureID         string `json:"feature_id"`
	Count             int64  `json:"count"`
	RecordsRegistered int64  `json:"records_registered"`
}

// Settings is settings/v1.
type Settings struct {
	SettingKey           string       `json:"setting_key"`
	Value                SettingValue `json:"value"`
	CustomizationPresent bool         `json:"customization_present"`
	CustomizationCount   int64        `json:"customization_count"`
}

// Operation is operation/v1.
type Operation struct {
	OperationID string `json:"operation_id"`
	AppID       string `json:"app_id"`
	ResultCode  string `json:"result_code"`
	RequestID   string `json:"request_id"`
}

func (*TenantProfile) Schema() Schema { return SchemaTenantProfileV1 }
func (*ClientEnv) Schema() Schema     { return SchemaClientEnvV1 }
func (*AppAccess) Schema() Schema     { return SchemaAppAccessV1 }
func (*FeatureUse) Schema() Schema    { return SchemaFeatureUseV1 }
func (*Settings) Schema() Schema      { return SchemaSettingsV1 }
func (*Operation) Schema() Schema     { return SchemaOperationV1 }

func (*TenantProfile) payload() {}
func (*ClientEnv) payload()     {}
func (*AppAccess) payload()     {}
func (*FeatureUse) payload()    {}
func (*Settings) payload()      {}
func (*Operation) payload()     {}

// ValueKind says which member of a SettingValue is set.
type ValueKind uint8

// The kinds of setting value. The zero ValueKind is "no value".
const (
	ValueToken ValueKind = iota + 1
	ValueBool
	ValueInt
)

// SettingValue is settings/v1's value: exactly one of a token, a boolean or an
// integer, as Kind says.
type SettingValue struct {
	Kind  ValueKind
	Token string
	Bool  bool
	Int   int64
}

// TokenValue, BoolValue and IntValue build a SettingValue.
func TokenValue(s string) SettingValue { return SettingValue{Kind: ValueToken, Token: s} }

// BoolValue builds a boolean SettingValue.
func BoolValue(b bool) SettingValue { return SettingValue{Kind: ValueBool, Bool: b} }

// IntValue builds an integer SettingValue.
func IntValue(i int64) SettingValue { return SettingValue{Kind: ValueInt, Int: i} }

// MarshalJSON writes the value as the JSON type its Kind names.
func (v SettingValue) MarshalJSON() ([]byte, error) {
	switch v.Kind {
	case ValueToken:
		return json.Marshal(v.Token)
	case ValueBool:
		return strconv.AppendBool(nil, v.Bool), nil
	case ValueInt:
		return strconv.AppendInt(nil, v.Int, 10), nil
	}
	return []byte("null"), nil
}
