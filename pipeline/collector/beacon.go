package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
)

// A beacon is what a browser sends with navigator.sendBeacon when its page goes away:
// {"token": "<ingest token>", "events": [...]}. sendBeacon cannot set headers, so the ingest
// token travels in the body; never in the URL, where access logs and browser history would
// keep it.

// beacon serves POST /v1/beacon: {"token": "<ingest token>", "events": [...]}. The body is
// text/plain so that the browser sends it without a CORS preflight (a page being unloaded
// has no time for one); application/json is accepted too. Limits, the per-event path and
// the Kafka write are those of /v1/events. sendBeacon never reads the answer, so a fully
// accepted beacon gets an empty 204; anything else gets the /v1/events reply and status.
//
// The token must come first (the SDK writes it first): at most beaconPrefix bytes of the body
// are read before it is checked, and no request slot is taken before — so uploads without a
// valid token, however slow, cannot hold the slots every tenant's ingest needs.
func (c *Collector) beacon(w http.ResponseWriter, r *http.Request) {
	if herr := beaconType(r.Header.Get("Content-Type")); herr != nil {
		c.fail(w, *herr)
		return
	}
	src, closeBody, herr := c.bodyReader(w, r)
	if herr != nil {
		c.fail(w, *herr)
		return
	}
	defer closeBody()
	body := &gatedReader{r: src, left: beaconPrefix}
	dec := json.NewDecoder(body)
	// Fixed messages: a decoder error could quote part of the body, token included.
	malformed := httpError{http.StatusBadRequest, "malformed_beacon", `send {"token": "<ingest token>", "events": [...]}, the token first`}
	tok, err := beaconToken(dec)
	if errors.Is(err, errPrefix) {
		c.fail(w, httpError{http.StatusUnauthorized, "unauthorized", `send the tenant's ingest token first in the body: {"token": "<ingest token>", "events": [...]}`})
		return
	}
	if err != nil {
		c.fail(w, body.answer(c, malformed))
		return
	}
	tenant, ok := c.tenantOf(tok)
	if !ok {
		c.fail(w, httpError{http.StatusUnauthorized, "unauthorized", `send the tenant's ingest token as "token" in the body`})
		return
	}
	done, ok := c.admitTenant(w, tenant)
	if !ok {
		return
	}
	defer done()
	body.left = -1 // authenticated: the rest of the body, up to collector.max_body_bytes
	var events json.RawMessage
	key, err := dec.Token()
	if err == nil && key == "events" {
		err = dec.Decode(&events)
	} else if err == nil {
		err = errMalformed
	}
	if err == nil {
		var end json.Token
		if end, err = dec.Token(); err == nil && end != json.Delim('}') {
			err = errMalformed
		}
	}
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			err = nil
		} else if err == nil {
			err = errMalformed // data after the object
		}
	}
	if err != nil {
		c.fail(w, body.answer(c, malformed))
		return
	}
	c.m.bytes.Add(float64(body.n))
	events = bytes.TrimSpace(events)
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
	if !c.allow(w, tenant, len(raws)) {
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

// beaconPrefix is how much of a beacon is read before its token is checked: the token is at
// most 512 bytes (tenantOf), escaped at most ×6, and comes first.
const beaconPrefix = 4 << 10

var (
	errPrefix    = errors.New("the token does not come first")
	errMalformed = errors.New("malformed beacon")
)

// beaconToken reads {"token": "<token>" from the start of a beacon.
func beaconToken(dec *json.Decoder) (string, error) {
	for i, want := range []any{json.Delim('{'), "token"} {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		if tok != want {
			if i == 1 {
				return "", errPrefix
			}
			return "", errMalformed
		}
	}
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", errMalformed
	}
	return s, nil
}

// gatedReader counts what it reads and, while left ≥ 0, reads no more than left bytes (then
// errPrefix): the part of a body read before its sender is known.
type gatedReader struct {
	r    io.Reader
	left int64 // < 0: no bound
	n    int64
	err  error // what reading the body ended with, but io.EOF
}

// answer is the answer to a beacon that could not be read: the body's own failure (too large,
// bad gzip, cut short) if reading it failed, else malformed.
func (g *gatedReader) answer(c *Collector, malformed httpError) httpError {
	if g.err != nil && !errors.Is(g.err, errPrefix) {
		if herr := c.bodyError(g.err, g.n); herr != nil {
			return *herr
		}
	}
	return malformed
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, errPrefix
	}
	if g.left > 0 && int64(len(p)) > g.left {
		p = p[:g.left]
	}
	k, err := g.r.Read(p)
	if err != nil && err != io.EOF {
		g.err = err
	}
	g.n += int64(k)
	if g.left > 0 {
		g.left -= int64(k)
	}
	return k, err
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
