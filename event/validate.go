package event

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of Limits.
const (
	DefaultMaxAge   = 7 * 24 * time.Hour
	DefaultMaxSkew  = 5 * time.Minute
	DefaultMaxBytes = 8 << 10
)

// ErrInvalidLimits is wrapped by Limits.Validate.
var ErrInvalidLimits = errors.New("invalid event limits")

// Limits bound what Validate and the guard accept. A zero field takes its default.
type Limits struct {
	// MaxAge is how far in the past occurred_at may lie. Older events are too
	// late for their window and for the idempotency store; collectors that were
	// offline longer must drop them.
	MaxAge time.Duration
	// MaxSkew is how far in the future occurred_at may lie, for clock skew.
	MaxSkew time.Duration
	// MaxBytes is the largest message the guard will consider an event.
	MaxBytes int
}

// DefaultLimits returns the limits used when none are configured.
func DefaultLimits() Limits {
	return Limits{MaxAge: DefaultMaxAge, MaxSkew: DefaultMaxSkew, MaxBytes: DefaultMaxBytes}
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxAge == 0 {
		l.MaxAge = DefaultMaxAge
	}
	if l.MaxSkew == 0 {
		l.MaxSkew = DefaultMaxSkew
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// Validate reports limits that cannot be meant: negative durations or sizes,
// and a maximum size too small for a typical event.
func (l Limits) Validate() error {
	var errs []error
	if l.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("%w: max_age %v is negative; use 0 for the default of %v", ErrInvalidLimits, l.MaxAge, DefaultMaxAge))
	}
	if l.MaxSkew < 0 {
		errs = append(errs, fmt.Errorf("%w: max_skew %v is negative; use 0 for the default of %v", ErrInvalidLimits, l.MaxSkew, DefaultMaxSkew))
	}
	if l.MaxBytes < 0 || (l.MaxBytes > 0 && l.MaxBytes < 1024) {
		errs = append(errs, fmt.Errorf("%w: max_bytes %d is below 1024, smaller than some valid events; use 0 for the default of %d", ErrInvalidLimits, l.MaxBytes, DefaultMaxBytes))
	}
	return errors.Join(errs...)
}

// Validate checks a decoded event against its schema's patterns, enumerations
// and bounds, and occurred_at against now and lim. It is pure: the caller
// supplies the clock. Validate's error is a *Rejection.
func Validate(ev *Event, now time.Time, lim Limits) error {
	if r := validate(ev, now, lim); r != nil {
		return r
	}
	return nil
}

func validate(ev *Event, now time.Time, lim Limits) *Rejection {
	lim = lim.WithDefaults()
	if !IsEventID(ev.EventID) {
		return reject(ReasonInvalidEventID, "event_id", "must be a random UUID in lowercase canonical form, not the nil UUID")
	}
	if !IsID(ev.TenantID) {
		return reject(ReasonInvalidTenantID, "tenant_id", "must match "+PatternID)
	}
	if ev.OccurredAt.IsZero() {
		return reject(ReasonInvalidTimestamp, "occurred_at", "must be set")
	}
	if !ev.Schema.Known() {
		return reject(ReasonUnknownSchema, "schema", "must be one of the known category versions")
	}
	if ev.Data == nil || ev.Data.Schema() != ev.Schema {
		return reject(ReasonInconsistent, "data", "payload does not belong to the category named by schema")
	}
	if !IsID(ev.Source) {
		return reject(ReasonInvalidField, "source", "must match "+PatternID)
	}
	if r := validateActor(&ev.Envelope); r != nil {
		return r
	}
	if r := validateData(ev.Data); r != nil {
		return r
	}
	t := ev.OccurredAt
	if t.Before(now.Add(-lim.MaxAge)) {
		return reject(ReasonTooOld, "occurred_at", fmt.Sprintf("older than the maximum age of %v; drop the event at the collector", lim.MaxAge))
	}
	if t.After(now.Add(lim.MaxSkew)) {
		return reject(ReasonInFuture, "occurred_at", fmt.Sprintf("more than %v in the future; check the collector's clock", lim.MaxSkew))
	}
	return nil
}

// validateActor checks user and client, whose presence depends on the category.
func validateActor(env *Envelope) *Rejection {
	if env.Schema.TenantLevel() {
		if env.User != "" {
			return reject(ReasonForbiddenField, "user", "a tenant-level event carries no user")
		}
		if env.Client == (Client{}) {
			return nil
		}
	} else {
		if !IsUserID(env.User) {
			return reject(ReasonInvalidField, "user", "must be an opaque id matching "+PatternUser)
		}
		if env.Client == (Client{}) {
			return reject(ReasonMissingField, "client", "required for user-level categories")
		}
	}
	c := &env.Client
	if !c.OS.Valid() {
		return reject(ReasonInvalidField, "client.os", "must be one of windows, macos, linux, ios, android, chromeos, other")
	}
	if c.OSVersion != "" && !IsOSVersion(c.OSVersion) {
		return reject(ReasonInvalidField, "client.os_version", "must match "+PatternOSVersion+"; omit it when unknown")
	}
	if !c.DeviceKind.Valid() {
		return reject(ReasonInvalidField, "client.device_kind", "must be one of desktop, mobile, tablet, other")
	}
	return nil
}

func validateData(p Payload) *Rejection {
	switch d := p.(type) {
	case *TenantProfile:
		if d == nil {
			return nilPayload()
		}
		if r := inRange("data.user_count", d.UserCount, 0, MaxUserCount); r != nil {
			return r
		}
		return inRange("data.organization_count", d.OrganizationCount, 0, MaxOrganizationCount)
	case *ClientEnv:
		if d == nil {
			return nilPayload()
		}
		if !d.ClientKind.Valid() {
			return reject(ReasonInvalidField, "data.client_kind", "must be one of browser, desktop_app, mobile_app, api")
		}
		if !d.Browser.Valid() {
			return reject(ReasonInvalidField, "data.browser", "must be one of chrome, edge, firefox, safari, other, none; never a user agent")
		}
	case *AppAccess:
		if d == nil {
			return nilPayload()
		}
		if !IsID(d.AppID) {
			return reject(ReasonInvalidField, "data.app_id", "must match "+PatternID)
		}
		if !d.Action.Valid() {
			return reject(ReasonInvalidField, "data.action", "must be one of open, view, create, update, delete, export, import, search, share")
		}
	case *FeatureUse:
		if d == nil {
			return nilPayload()
		}
		if !IsID(d.FeatureID) {
			return reject(ReasonInvalidField, "data.feature_id", "must match "+PatternID)
		}
		if r := inRange("data.count", d.Count, 1, MaxFeatureCount); r != nil {
			return r
		}
		return inRange("data.records_registered", d.RecordsRegistered, 0, MaxRecordsRegistered)
	case *Settings:
		if d == nil {
			return nilPayload()
		}
		if !IsID(d.SettingKey) {
			return reject(ReasonInvalidField, "data.setting_key", "must match "+PatternID)
		}
		switch d.Value.Kind {
		case ValueToken:
			if !IsSettingToken(d.Value.Token) {
				return reject(ReasonInvalidField, "data.value", "a string value must be a token matching "+PatternToken)
			}
		case ValueBool:
		case ValueInt:
			if r := inRange("data.value", d.Value.Int, MinSettingInt, MaxSettingInt); r != nil {
				return r
			}
		default:
			return reject(ReasonMissingField, "data.value", "required")
		}
		if r := inRange("data.customization_count", d.CustomizationCount, 0, MaxCustomizationCount); r != nil {
			return r
		}
		if d.CustomizationPresent != (d.CustomizationCount > 0) {
			return reject(ReasonInconsistent, "data.customization_count", "must be 0 exactly when customization_present is false")
		}
	case *Operation:
		if d == nil {
			return nilPayload()
		}
		if !IsID(d.OperationID) {
			return reject(ReasonInvalidField, "data.operation_id", "must match "+PatternID)
		}
		if !IsID(d.AppID) {
			return reject(ReasonInvalidField, "data.app_id", "must match "+PatternID)
		}
		if !IsResultCode(d.ResultCode) {
			return reject(ReasonInvalidField, "data.result_code", "must be a result token matching "+PatternResultCode)
		}
		if !IsRequestID(d.RequestID) {
			return reject(ReasonInvalidField, "data.request_id", "must be 16 to 32 lowercase hex digits or a lowercase UUID")
		}
	}
	return nil
}

func nilPayload() *Rejection {
	return reject(ReasonMissingField, "data", "payload is a nil pointer")
}

func inRange(field string, v, min, max int64) *Rejection {
	if v < min || v > max {
		return reject(ReasonOutOfRange, field, fmt.Sprintf("must be between %d and %d", min, max))
	}
	return nil
}
