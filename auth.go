package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
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
		if !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/metrics" {
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
	if err := checkSecretFile("-token-file", file); err != nil {
		return "", err
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

// checkSecretFile checks a file that holds a secret of charond's (the token, a vault
// password): it must be a regular file that others cannot read, nor group or others write.
// Readable by everyone, it is no secret; writable by others, it is theirs.
func checkSecretFile(flag, file string) error {
	info, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s: %s is not a regular file", flag, file)
	}
	if perm := info.Mode().Perm(); perm&0o026 != 0 {
		return fmt.Errorf("%s: %s has mode %04o: it must not be readable by others nor writable by group or others (chmod 600 it)", flag, file, perm)
	}
	return nil
}

// vaultLabel is what a vault id's label may be: Ansible's labels are plain names.
var vaultLabel = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// vaultArgs checks -vault-password-file and each -vault-id, and returns them as the
// ansible-playbook options every job runs with, with absolute paths.
func vaultArgs(passwordFile string, ids []string) ([]string, error) {
	var args []string
	if passwordFile != "" {
		abs, err := filepath.Abs(passwordFile)
		if err == nil {
			err = checkSecretFile("-vault-password-file", abs)
		}
		if err != nil {
			return nil, err
		}
		args = append(args, "--vault-password-file="+abs)
	}
	for _, id := range ids {
		label, file, ok := strings.Cut(id, "@")
		if !ok || !vaultLabel.MatchString(label) || file == "" {
			return nil, fmt.Errorf("-vault-id %q: want label@FILE, the label of letters, digits, '.', '-' and '_'", id)
		}
		if file == "prompt" {
			return nil, fmt.Errorf("-vault-id %q: charond's jobs cannot answer a prompt; give a file", id)
		}
		abs, err := filepath.Abs(file)
		if err == nil {
			err = checkSecretFile("-vault-id "+label, abs)
		}
		if err != nil {
			return nil, err
		}
		args = append(args, "--vault-id="+label+"@"+abs)
	}
	return args, nil
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

// minTokenBytes is the shortest token charond accepts: 16 random bytes resist guessing over
// the network for good, and a hex or base64 encoding of them is longer still.
const minTokenBytes = 16

// checkToken refuses a token that could not be presented in an Authorization header, or is
// short enough to guess. An empty token means no authentication and is not checked here.
func checkToken(token string) error {
	if token == "" {
		return nil
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("the token holds a space, control or non-ASCII byte at offset %d: a bearer token must be printable ASCII without spaces (for example the output of `openssl rand -hex 32`)", i)
		}
	}
	if len(token) < minTokenBytes {
		return fmt.Errorf("the token is %d bytes long: use at least %d (for example the output of `openssl rand -hex 32`)", len(token), minTokenBytes)
	}
	return nil
}

// hostGuard answers only requests whose Host header names this server. A page on a hostile
// site can make its own name resolve to 127.0.0.1 (DNS rebinding) and so become same-origin
// with charond; its requests still carry that name in Host, and are refused here.
type hostGuard struct {
	names map[string]bool // lower-case host names without port; nil: any host is answered
}

// loopbackNames are the names of this machine that a browser can only reach locally.
var loopbackNames = []string{"localhost", "127.0.0.1", "::1"}

// newHostGuard builds the guard for a server listening on addr: on loopback it answers the
// loopback names and the extra ones; elsewhere, only the extra ones plus loopback when some
// are given, and any host when none are (charond cannot know the names it is reached by).
func newHostGuard(addr string, extra []string) hostGuard {
	if !isLoopback(addr) && len(extra) == 0 {
		return hostGuard{}
	}
	g := hostGuard{names: map[string]bool{}}
	for _, n := range append(append([]string{}, loopbackNames...), extra...) {
		g.names[hostOnly(n)] = true
	}
	return g
}

// hostOnly lower-cases a Host value and drops its port, the brackets of an IPv6 address and a
// trailing dot, so that every spelling of one name compares equal.
func hostOnly(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// allows reports whether a request's Host may be answered.
func (g hostGuard) allows(host string) bool {
	return g.names == nil || g.names[hostOnly(host)]
}

// guardHost wraps the whole server: a request for a host charond does not answer for gets
// 421 before anything else runs, CORS and authentication included.
func (s *server) guardHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts.allows(r.Host) {
			s.writeError(w, r, apiErrorf(errMisdirected,
				"Host %q is not a name charond answers to: use localhost, 127.0.0.1 or [::1], or add the name with -allowed-hosts", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseCrossSite refuses every request that changes something (any method but GET, HEAD and
// OPTIONS) when a browser says it comes from a page of another origin. A page may send a POST
// to any address without asking (an HTML form, fetch with mode no-cors); only the Origin and
// Sec-Fetch-Site headers, which the page cannot forge, tell. curl, scripts and the client send
// neither and are not affected.
func (s *server) refuseCrossSite(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			if !sameOrigin(origin, r.Host) && s.allowedOrigin(origin) == "" {
				s.writeError(w, r, apiErrorf(errForbidden,
					"cross-origin request refused: a page from %s may not %s %s; only charond's own origin and those in -cors-origins may", origin, r.Method, r.URL.Path))
				return
			}
		} else if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			s.writeError(w, r, apiErrorf(errForbidden,
				"cross-site request refused: the browser marks this %s as Sec-Fetch-Site: %s and it carries no Origin", r.Method, site))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether a browser's Origin names the host the request was sent to. The
// Host has already passed checkHost. The scheme is not compared: behind a TLS proxy the page
// is https while charond itself is plain http, and browsers leave default ports out of both.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false // "null" (a sandboxed or file: page) among them
	}
	return strings.EqualFold(u.Host, host)
}
