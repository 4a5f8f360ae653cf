package query

import (
	"embed"
	"io/fs"
	"net/http"
)

// The web page (docs/DESIGN.md §5): static files embedded in the binary, nothing from a CDN. It
// signs in with a token, lets the principal pick a purpose, and draws that purpose's reports.
//
//go:embed web
var webFiles embed.FS

func webHandler() http.Handler {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only the page's own files, never anything else: a strict CSP keeps it that way.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}
