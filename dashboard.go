package main

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

// The dashboard is one page, web/index.html, and its scripts and styles under web/, built into
// the binary: GET / answers the page, GET /ui/NAME a file of web/. It needs no token to load
// (it holds no data; it asks for the token itself, and sends it with every API request).

//go:embed web
var webFiles embed.FS

// pageHeaders are the headers of the page and its files. The policy lets the page load only
// its own scripts and styles, from charond, and talk to nothing but charond: no inline script
// (a job name or log line that got into the DOM as HTML could not run), no other origin, no
// framing by another site.
var pageHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"X-Frame-Options":        "DENY",
	// Revalidated each time, so a new charond's page is never mixed with an old one's files;
	// the ETag makes the check cheap.
	"Cache-Control": "no-cache",
}

// webAsset is one embedded file, ready to serve.
type webAsset struct {
	body        []byte
	contentType string
	etag        string
}

// loadWebAssets reads every embedded file once, at start.
func loadWebAssets() map[string]webAsset {
	assets := map[string]webAsset{}
	entries, err := fs.ReadDir(webFiles, "web")
	if err != nil {
		panic("the embedded web files cannot be read: " + err.Error())
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		body, err := webFiles.ReadFile("web/" + e.Name())
		if err != nil {
			panic("the embedded web files cannot be read: " + err.Error())
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		if ct == "" {
			ct = "application/octet-stream"
		}
		assets[e.Name()] = webAsset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return assets
}

// servePage answers the dashboard.
func (s *server) servePage(w http.ResponseWriter, r *http.Request) {
	s.serveWebFile(w, r, "index.html")
}

// serveWebAsset answers one of the page's files, by its name under web/.
func (s *server) serveWebAsset(w http.ResponseWriter, r *http.Request) {
	s.serveWebFile(w, r, r.PathValue("name"))
}

func (s *server) serveWebFile(w http.ResponseWriter, r *http.Request, name string) {
	asset, ok := s.web[name]
	if !ok {
		s.writeError(w, r, apiErrorf(errNotFound, "no such file: /ui/%s", name))
		return
	}
	h := w.Header()
	for k, v := range pageHeaders {
		h.Set(k, v)
	}
	h.Set("ETag", asset.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, asset.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", asset.contentType)
	w.Write(asset.body)
}
