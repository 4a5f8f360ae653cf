package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"unicode/utf8"
)

// decodeStd was the first attempt at Decode, built on encoding/json. It is kept
// as the baseline of BenchmarkDecode and as an independent oracle for
// FuzzDecode. encoding/json alone is too lenient for the contract (it matches
// keys case-insensitively, keeps the last of duplicate keys, treats null as
// "leave unset" and replaces invalid UTF-8), so it needs a token pass first:
// two passes, many small allocations, and about 5x slower than the
// single-pass Decode (see decode_timing_test.go).
func decodeStd(b []byte) (Event, error) {
	if !utf8.Valid(b) {
		return Event{}, ReasonMalformedJSON
	}
	if err := checkTokens(b); err != nil {
		return Event{}, err
	}
	var raw struct {
		EventID    *string `json:"event_id"`
		TenantID   *string `json:"tenant_id"`
		OccurredAt *string `json:"occurred_at"`
		Schema     *string `json:"schema"`
		Source     *string `json:"source"`
		User       *string `json:"user"`
		Client     *struct {
			OS         *string `json:"os"`
			OSVersion  *string `json:"os_version"`
			DeviceKind *string `json:"device_kind"`
		} `json:"client"`
		Data json.RawMessage `json:"data"`
	}
	if err := strictUnmarshal(b, &raw); err != nil {
		return Event{}, err
	}
	if raw.EventID == nil || raw.TenantID == nil || raw.OccurredAt == nil || raw.Schema == nil || raw.Source == nil || raw.Data == nil {
		return Event{}, ReasonMissingField
	}
	var ev Event
	ev.EventID, ev.TenantID, ev.Source, ev.Schema = *raw.EventID, *raw.TenantID, *raw.Source, Schema(*raw.Schema)
	t, rej := parseTime(*raw.OccurredAt)
	if rej != nil {
		return Event{}, rej.Reason
	}
	ev.OccurredAt = t
	if raw.Client != nil {
		c := raw.Client
		if c.OS == nil || c.DeviceKind == nil {
			return Event{}, ReasonMissingField
		}
		ev.Client = Client{OS: OS(*c.OS), DeviceKind: DeviceKind(*c.DeviceKind)}
		if c.OSVersion != nil {
			if *c.OSVersion == "" {
				return Event{}, ReasonInvalidField
			}
			ev.Client.OSVersion = *c.OSVersion
		}
	}
	if raw.Data[0] != '{' {
		return Event{}, ReasonWrongType
	}
	if !ev.Schema.Known() {
		return Event{}, ReasonUnknownSchema
	}
	if ev.Schema.TenantLevel() {
		if raw.User != nil {
			return Event{}, ReasonForbiddenField
		}
	} else {
		if raw.User == nil || raw.Client == nil {
			return Event{}, ReasonMissingField
		}
		ev.User = *raw.User
	}
	var err error
	ev.Data, err = decodeStdPayload(ev.Schema, raw.Data)
	if err != nil {
		return Event{}, err
	}
	return ev, nil
}

func decodeStdPayload(s Schema, b []byte) (Payload, error) {
	missing := func(ps ...any) bool {
		return slices.ContainsFunc(ps, func(p any) bool {
			switch p := p.(type) {
			case *string:
				return p == nil
			case *int64:
				return p == nil
			case *bool:
				return p == nil
			case json.RawMessage:
				return p == nil
			}
			return true
		})
	}
	switch s {
	case SchemaTenantProfileV1:
		var r struct {
			UserCount         *int64 `json:"user_count"`
			OrganizationCount *int64 `json:"organization_count"`
		}
		if err := strictUnmarshal(b, &r); err != nil {
			return nil, err
		}
		if missing(r.UserCount, r.OrganizationCount) {
			return nil, ReasonMissingField
		}
		return &TenantProfile{UserCount: *r.UserCount, OrganizationCount: *r.OrganizationCount}, nil
	case SchemaClientEnvV1:
		var r struct {
			ClientKind *string `json:"client_kind"`
			Browser    *string `json:"browser"`
		}
		if err := strictUnmarshal(b, &r); err != nil {
			return nil, err
		}
		if missing(r.ClientKind, r.Browser) {
			return nil, ReasonMissingField
		}
		return &ClientEnv{ClientKind: ClientKind(*r.ClientKind), Browser: Browser(*r.Browser)}, nil
	case SchemaAppAccessV1:
		var r struct {
			AppID  *string `json:"app_id"`
			Action *string `json:"action"`
		}
		if err := strictUnmarshal(b, &r); err != nil {
			return nil, err
		}
		if missing(r.AppID, r.Action) {
			return nil, ReasonMissingField
		}
		return &AppAccess{AppID: *r.AppID, Action: Action(*r.Action)}, nil
	case SchemaFeatureUseV1:
		var r struct {
			FeatureID         *string `json:"feature_id"`
			Count             *int64  `json:"count"`
			RecordsRegistered *int64  `json:"records_registered"`
		}
		if err := strictUnmarshal(b, &r); err != nil {
			return nil, err
		}
		if missing(r.FeatureID, r.Count, r.RecordsRegistered) {
			return nil, ReasonMissingField
		}
		return &FeatureUse{FeatureID: *r.FeatureID, Count: *r.Count, RecordsRegistered: *r.RecordsRegistered}, nil
	case SchemaSettingsV1:
		var r struct {
			SettingKey           *string         `json:"setting_key"`
			Value                json.RawMessage `json:"value"`
			CustomizationPresent *bool           `json:"customization_present"`
			CustomizationCount   *int64          `json:"customization_count"`
		}
		if err := strictUnmarshal(b, &r); err != nil {
			return nil, err
		}
		if missing(r.SettingKey, r.Value, r.CustomizationPresent, r.CustomizationCount) {
			return nil, ReasonMissingField
		}
		p := &Settings{SettingKey: *r.SettingKey, CustomizationPresent: *r.CustomizationPresent, CustomizationCount: *r.CustomizationCount}
		switch r.Value[0] {
		case '"':
			var s string
			if err := json.Unmarshal(r.Value, &s); err != nil {
				return nil, ReasonMalformedJSON
			}
			p.Value = TokenValue(s)
		case 't', 'f':
			p.Value = BoolValue(r.Value[0] == 't')
		default:
			var i int64
			if err := json.Unmarshal(r.Value, &i); err != nil {
				return nil, ReasonWrongType
			}
			p.Value = IntValue(i)
		}
		return p, nil
	case SchemaOperationV1:
		var r struct {
			OperationID *string `json:"operation_id"`
			AppID       *string `json:"app_id"`
			ResultCode  *string `json:"result_code"`
			RequestID   *string `json:"request_id"`
		}
		if err := strictUnmarshal(b, &r); err != nil {
			return nil, err
		}
		if missing(r.OperationID, r.AppID, r.ResultCode, r.RequestID) {
			return nil, ReasonMissingField
		}
		return &Operation{OperationID: *r.OperationID, AppID: *r.AppID, ResultCode: *r.ResultCode, RequestID: *r.RequestID}, nil
	}
	return nil, ReasonUnknownSchema
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return ReasonWrongType
		}
		return ReasonUnknownField
	}
	return nil
}

// checkTokens does what encoding/json will not: one value only, no null, no
// duplicate keys, and keys spelled exactly as the schema spells them.
func checkTokens(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		object  bool
		wantKey bool
		keys    map[string]bool
		path    string
	}
	var stack []frame
	var lastKey string
	allowed := func(path, key string) bool {
		switch path {
		case "":
			return slices.Contains(envelopeKeys, key)
		case "client":
			return slices.Contains(clientKeys, key)
		case "data":
			for _, ks := range [][]string{tenantProfileKeys, clientEnvKeys, appAccessKeys, featureUseKeys, settingsKeys, operationKeys} {
				if slices.Contains(ks, key) {
					return true
				}
			}
		}
		return false
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return ReasonMalformedJSON
		}
		if err != nil {
			return ReasonMalformedJSON
		}
		if len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].wantKey {
			top := &stack[len(stack)-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
			} else {
				k := tok.(string)
				if top.keys[k] {
					return ReasonDuplicateKey
				}
				if len(stack) <= 2 && !allowed(top.path, k) {
					return ReasonUnknownField
				}
				top.keys[k] = true
				top.wantKey = false
				lastKey = k
				continue
			}
		} else {
			switch tok := tok.(type) {
			case json.Delim:
				switch tok {
				case '{':
					path := ""
					if len(stack) > 0 {
						path = lastKey
					}
					stack = append(stack, frame{object: true, wantKey: true, keys: map[string]bool{}, path: path})
					continue
				case '[':
					stack = append(stack, frame{})
					continue
				case ']':
					stack = stack[:len(stack)-1]
				}
			case nil:
				return ReasonWrongType
			}
		}
		if len(stack) == 0 {
			break
		}
		if top := &stack[len(stack)-1]; top.object {
			top.wantKey = true
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return ReasonMalformedJSON
	}
	return nil
}
