package query

import (
	_ "embed"
	"encoding/json"
	"io"
	"net/http"
)

// openAPIFile is the OpenAPI document kept in the repository (query/openapi.json); a test
// checks it equals OpenAPI(), so the file users read is the API the binary serves.
//
//go:embed openapi.json
var openAPIFile []byte

func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(openAPIFile)
}

type obj = map[string]any

// WriteOpenAPI writes the OpenAPI document (OpenAPI) to w: 'shukei query --openapi'.
func WriteOpenAPI(w io.Writer) error {
	b, err := OpenAPI()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// OpenAPI renders the OpenAPI 3.0 document of the service from the report definitions.
func OpenAPI() ([]byte, error) {
	errRef := func(desc string) obj {
		return obj{"description": desc, "content": obj{"application/json": obj{"schema": obj{"$ref": "#/components/schemas/Error"}}}}
	}
	denials := obj{
		"400": errRef("a parameter is missing, unknown or malformed (no free text is accepted anywhere)"),
		"401": errRef("no token, a malformed one, or an unknown one; its audit_seq names the record of the interval in which such refusals are summarised"),
		"403": errRef("the purpose is not granted, the grant expired, the report serves another purpose, or (support) no open ticket"),
		"503": errRef("query.max_in_flight requests are being answered (Retry-After says when to try again), the audit log cannot be written (no request is answered without its record), or a service is down"),
	}
	paths := obj{}
	for _, r := range reports {
		params := []obj{
			{"name": "purpose", "in": "query", "required": true, "description": "the purpose this request is made for",
				"schema": obj{"type": "string", "enum": []string{r.Purpose}}},
			{"name": "format", "in": "query", "description": "json (default) or csv (also chosen by Accept: text/csv)",
				"schema": obj{"type": "string", "enum": []string{"json", "csv"}, "default": "json"}},
		}
		for _, p := range r.Params {
			params = append(params, paramSchema(p))
		}
		props := obj{}
		var required []string
		for _, c := range r.Columns {
			props[c.Name] = columnSchema(c)
			required = append(required, c.Name)
		}
		desc := r.Description
		if r.Threshold {
			desc += " Every value is built from segments of at least k distinct tenants (k is in the answer), so no combination of filters isolates a tenant."
		}
		resp := obj{
			"200": obj{"description": r.Title, "content": obj{
				"application/json": obj{"schema": obj{"allOf": []obj{
					{"$ref": "#/components/schemas/Result"},
					{"type": "object", "properties": obj{"rows": obj{"type": "array", "items": obj{
						"type": "object", "properties": props, "required": required, "additionalProperties": false}}}},
				}}},
				"text/csv": obj{"schema": obj{"type": "string"}},
			}},
			"404": errRef("no such report"),
			"504": errRef("the report took longer than the service's timeout"),
		}
		for k, v := range denials {
			resp[k] = v
		}
		paths["/v1/reports/"+r.Name] = obj{"get": obj{
			"operationId": r.Name, "summary": r.Title, "description": desc, "tags": []string{r.Purpose},
			"security": []obj{{"bearer": []string{}}}, "parameters": params, "responses": resp,
		}}
	}
	paths["/v1/whoami"] = obj{"get": obj{
		"operationId": "whoami", "summary": "The signed-in principal, its purposes and the reports it may run",
		"security": []obj{{"bearer": []string{}}},
		"responses": obj{"200": obj{"description": "principal", "content": obj{"application/json": obj{"schema": obj{"type": "object"}}}},
			"401": denials["401"], "503": denials["503"]},
	}}
	grant := obj{"description": "the grant", "content": obj{"application/json": obj{"schema": obj{"type": "object", "properties": obj{
		"id": obj{"type": "string"}, "principal": obj{"type": "string"}, "purpose": obj{"type": "string"}, "tenant": obj{"type": "string"},
		"clause": obj{"type": "string"}, "justification": obj{"type": "string"}, "ttl": obj{"type": "string"},
		"state":       obj{"type": "string", "enum": []string{"pending", "open", "expired", "revoked"}},
		"approved_by": obj{"type": "string"}, "expires_at": obj{"type": "string", "format": "date-time"}}}}}}
	bgResponses := func(ok string) obj {
		return obj{ok: grant, "400": denials["400"], "401": denials["401"], "403": errRef("a step this principal may not take (requests: an enabled, unexpired employee or affiliate granted support; approvals: another such principal holding the break-glass approver grant; revocations: the requester, its approver or an approver-grant holder; partners and contractors never), or a grant not pending/open"),
			"404": errRef("no such grant"), "503": denials["503"]}
	}
	idParam := []obj{{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}}}
	paths["/v1/breakglass"] = obj{"post": obj{
		"operationId": "breakglass_request", "summary": "Request time-boxed access to one tenant's support trace (clause 3(2)-5..7)",
		"description": "Only an enabled, unexpired employee or affiliate whose grant names support may request. The grant stays pending until a different enabled, unexpired employee or affiliate holding the break-glass approver grant approves it; its time box starts at the first approval; a revocation is final, whatever order concurrent approvals and revocations land in. The justification must be printable (no control or format characters). Use it as breakglass=<id> on support_trace while the requester still qualifies. Every step and use, allowed or refused, is audited with the tenant.",
		"security":    []obj{{"bearer": []string{}}},
		"requestBody": obj{"required": true, "content": obj{"application/json": obj{"schema": obj{"type": "object", "additionalProperties": false,
			"required": []string{"tenant", "clause", "justification", "ttl"},
			"properties": obj{"tenant": obj{"type": "string", "pattern": patterns[Ident].String()},
				"clause":        obj{"type": "string", "enum": []string{"3(2)-5", "3(2)-6", "3(2)-7"}},
				"justification": obj{"type": "string", "minLength": 20, "description": "why, in writing: letters, digits, punctuation, symbols and spaces only"},
				"ttl":           obj{"type": "string", "description": "Go duration, at most 72h, e.g. 4h"}}}}}},
		"responses": bgResponses("201"),
	}}
	paths["/v1/breakglass/{id}/approve"] = obj{"post": obj{"operationId": "breakglass_approve", "summary": "Approve another principal's break-glass request",
		"security": []obj{{"bearer": []string{}}}, "parameters": idParam, "responses": bgResponses("200")}}
	paths["/v1/breakglass/{id}/revoke"] = obj{"post": obj{"operationId": "breakglass_revoke", "summary": "Close a break-glass grant now",
		"security": []obj{{"bearer": []string{}}}, "parameters": idParam, "responses": bgResponses("200")}}
	paths["/v1/reports"] = obj{"get": obj{
		"operationId": "catalogue", "summary": "Every report with its purpose, parameters and columns (signed in; audited)",
		"security":  []obj{{"bearer": []string{}}},
		"responses": obj{"200": obj{"description": "catalogue", "content": obj{"application/json": obj{"schema": obj{"type": "object"}}}}, "401": denials["401"], "403": denials["403"], "503": denials["503"]},
	}}
	doc := obj{
		"openapi": "3.0.3",
		"info": obj{"title": "Shukei query service", "version": "1",
			"description": "Purpose-scoped reports over Shukei's usage data. Every request declares one purpose and is written to a hash-chained audit log before it is answered."},
		"paths": paths,
		"components": obj{
			"securitySchemes": obj{"bearer": obj{"type": "http", "scheme": "bearer", "description": "a principal's token (shq_…), from 'shukei principals add'"}},
			"schemas": obj{
				"Error": obj{"type": "object", "required": []string{"error", "status"}, "properties": obj{
					"error": obj{"type": "string"}, "status": obj{"type": "integer"},
					"audit_seq": obj{"type": "integer", "description": "the audit record of this refusal"}}},
				"Result": obj{"type": "object", "required": []string{"report", "purpose", "generated_at", "params", "columns", "rows", "audit_seq"},
					"properties": obj{
						"report": obj{"type": "string"}, "purpose": obj{"type": "string"}, "title": obj{"type": "string"},
						"generated_at": obj{"type": "string", "format": "date-time"},
						"k":            obj{"type": "integer", "description": "fewest tenants behind a value (aggregate reports)"},
						"params":       obj{"type": "object"},
						"columns":      obj{"type": "array", "items": obj{"type": "object"}},
						"rows":         obj{"type": "array", "items": obj{"type": "object"}},
						"chart":        obj{"type": "object"},
						"audit_seq":    obj{"type": "integer"},
						"truncated":    obj{"type": "boolean"},
					}},
			},
		},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func paramSchema(p Param) obj {
	var s obj
	switch p.Kind {
	case Enum:
		s = obj{"type": "string", "enum": p.Values}
	case Ident, Ticket:
		s = obj{"type": "string", "pattern": patterns[p.Kind].String()}
	case Int:
		s = obj{"type": "integer", "minimum": p.Min, "maximum": p.Max}
	case Date:
		s = obj{"type": "string", "pattern": `^(\d{4}-\d{2}-\d{2}|today|last_week)$`}
	case Month:
		s = obj{"type": "string", "pattern": `^(\d{4}-\d{2}|current)$`}
	case Time:
		s = obj{"type": "string", "description": "RFC 3339, or now"}
	case Bool:
		s = obj{"type": "boolean"}
	}
	if p.Default != "" && !p.Multi {
		s["default"] = p.Default
	}
	out := obj{"name": p.Name, "in": "query", "description": p.Doc, "required": p.Required}
	if p.Multi {
		arr := obj{"type": "array", "items": s, "maxItems": maxValues}
		if p.Default != "" {
			arr["default"] = p.Default
		}
		out["schema"], out["style"], out["explode"] = arr, "form", false
	} else {
		out["schema"] = s
	}
	return out
}

func columnSchema(c Column) obj {
	switch c.Type {
	case "integer":
		return obj{"type": "integer", "nullable": true, "description": c.Doc}
	case "number":
		return obj{"type": "number", "nullable": true, "description": c.Doc}
	case "time":
		return obj{"type": "string", "format": "date-time", "description": c.Doc}
	}
	return obj{"type": "string", "description": c.Doc}
}
