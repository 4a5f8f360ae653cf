// Package events holds the JSON Schemas (draft 2020-12) of Shukei's usage events:
// the contract collector teams build and validate against. The Go types and the
// decoder that mirror them live in package event; this package only embeds the
// files, because go:embed cannot reach into a parent directory.
package events

import "embed"

// FS holds envelope.json and one <category>.v<N>.json per category version.
//
//go:embed *.json
var FS embed.FS

// BaseURL is the prefix of every schema's $id; envelope.json refers to the
// category schemas relative to it.
const BaseURL = "https://github.com/shukei/shukei/schemas/events/"

// Envelope is the file name of the top-level schema, the one to validate events against.
const Envelope = "envelope.json"
