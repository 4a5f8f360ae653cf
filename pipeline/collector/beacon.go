package collector

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"strings"
)

// beaconBody is what a browser sends with navigator.sendBeacon when its page goes away.
// sendBeacon cannot set headers, so the ingest token travels in the body; never in the URL,
// where access logs and browser history would keep it.
type beaconBody struct {
	Token  string          `json:"token"`
	Events json.RawMessage `json:"events"`
}

// beacon serves POST /v1/beacon: {"token": "<ingest token>", "events": [...]}. The body is
// text/plain so that the browser sends it without a CORS preflight (a page being unloaded
// has no time for one); application/json is accepted too. Limits, the per-event path and
// the Kafka write are those of /v1/events. sendBeacon never reads the answer, so a fully
// accepted beacon gets an empty 204; anything else gets the /v1/events reply and status.
func (c *Collector) beacon(w http.ResponseWriter, r *http.Request) {
	done, ok := c.admit(w)
	if !ok {
		return
	}
	defer done()

	if herr := beaconType(r.Header.Get("Content-Type")); herr != nil {
		c.fail(w, *herr)
		return
	}
	// The token is inside the body, so the body is read (bounded) before authenticating.
	body, herr := c.readBody(w, r)
	if herr != nil {
		c.fail(w, *herr)
		return
	}
	c.m.bytes.Add(float64(len(body)))
	var b beaconBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	// Fixed messages: a decoder error could quote part of the body, token included.
	if err := dec.Decode(&b); err != nil || dec.More() {
		c.fail(w, httpError{http.StatusBadRequest, "malformed_beacon", `send {"token": "<ingest token>", "events": [...]}`})
		return
	}
	tenant, ok := c.tenantOf(b.Token)
	if !ok {
		c.fail(w, httpError{http.StatusUnauthorized, "unauthorized", `send the tenant's ingest token as "token" in the body`})
		return
	}
	events := bytes.TrimSpace(b.Events)
	if len(events) == 0 || events[0] != '[' {
		// splitEvents would read anything else as NDJSON; a beacon's events are an array.
		c.fail(w, httpError{http.StatusBadRequest, "malformed_beacon", `"events" must be a JSON array of events`})
		return
	}
	raws, herr := splitEvents(events, c.cfg.MaxEvents)
	if herr != nil {
		c.fail(w, *herr)
		return
	}
	reply, status := c.process(r.Context(), tenant, raws)
	if status == http.StatusOK && reply.Accepted == len(reply.Results) {
		w.WriteHeader(http.StatusNoContent)
		c.m.requests.WithLabelValues("204", "").Inc()
		return
	}
	c.answer(w, status, reply)
}

// beaconType admits the types a beacon comes with: text/plain (what the SDK's Blob says, a
// CORS-safelisted type) or application/json, in UTF-8.
func beaconType(ct string) *httpError {
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "text/plain" || mt == "application/json") {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	return &httpError{http.StatusUnsupportedMediaType, "unsupported_media_type", "send the beacon as text/plain;charset=UTF-8 or application/json"}
}
