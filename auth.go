package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// This file holds what guards the API: the bearer token, the refusal to listen on a network
// without one, and CORS for browser pages.

// requireToken wraps the API so that every /api/ route needs `Authorization: Bearer <token>`.
// The two stream routes also take ?access_token=, since browsers' EventSource cannot set
// headers. /healthz stays open. An empty token turns the check off.
func (s *server) requireToken(next http.Handler) http.Handler {
	if s.token == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			next.ServeHTTP(w, r)
			return
		}
		given, ok := bearerToken(r)
		// Comparing digests keeps the comparison constant-time whatever the lengths.
		got := sha256.Sum256([]byte(given))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="charond"`)
			s.writeError(w, r, apiErrorf(errUnauthorized, "missing or invalid bearer token: send Authorization: Bearer <token>"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken returns the token a request carries, from its Authorization header or, on the
// stream routes only, from ?access_token=.
func bearerToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		return strings.TrimSpace(token), ok && strings.EqualFold(scheme, "Bearer")
	}
	if isStreamPath(r.URL.Path) {
		if t := r.URL.Query().Get("access_token"); t != "" {
			return t, true
		}
	}
	return "", false
}

func isStreamPath(path string) bool {
	return strings.HasSuffix(path, "/logs/stream") || strings.HasSuffix(path, "/events/stream")
}

// loadToken returns the token from -token, or else from -token-file.
func loadToken(token, file string) (string, error) {
	if token != "" && file != "" {
		return "", errors.New("-token (or CHARON_TOKEN) and -token-file are both set: use one")
	}
	if file == "" {
		return token, nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("-token-file: %w", err)
	}
	t := strings.TrimSpace(string(raw))
	if t == "" {
		return "", fmt.Errorf("-token-file: %s is empty", file)
	}
	return t, nil
}

// isLoopback reports whether addr (host:port) listens only on this machine. An empty host,
// 0.0.0.0 and :: listen everywhere; a host name other than localhost might resolve anywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// cors answers preflight requests and marks responses readable by the allowed origins.
func (s *server) cors(next http.Handler) http.Handler {
	if len(s.corsOrigins) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := s.allowedOrigin(origin)
		if allowed != "" {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", allowed)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "Location")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed != "" {
				h := w.Header()
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
				h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, Last-Event-ID")
				h.Set("Access-Control-Max-Age", "600")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// allowedOrigin is the Access-Control-Allow-Origin value for origin, or "" if it may not read.
func (s *server) allowedOrigin(origin string) string {
	if origin == "" {
		return ""
	}
	for _, o := range s.corsOrigins {
		if o == "*" {
			return "*"
		}
		if strings.EqualFold(o, origin) {
			return origin
		}
	}
	return ""
}
