package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds what a viewer of a long log needs besides its stream: any range of its
// lines by number, and a search of the whole log, done where the log is. A page that shows a
// million-line log keeps only what is on screen; the browser's own find cannot see the rest.

const (
	defaultLineRange = 1000
	maxLineRange     = 5000 // a screen holds some fifty lines; a range is a generous page of them
	defaultMatches   = 100
	maxMatches       = 1000
	maxQueryBytes    = 1024
)

// getLogLines answers lines from..from+limit-1 of a job's log as
// {"total": T, "from": F, "lines": [payload, ...]}, each payload as the log stream carries it.
func (s *server) getLogLines(w http.ResponseWriter, r *http.Request) {
	job, err := s.sched.get(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	from, err := queryInt(q.Get("from"), "from", 1, 1, 1<<62)
	if err == nil {
		var limit int
		if limit, err = queryInt(q.Get("limit"), "limit", defaultLineRange, 1, maxLineRange); err == nil {
			err = s.writeLines(w, job, from, limit)
		}
	}
	if err != nil {
		s.writeError(w, r, err)
	}
}

// writeLines writes the answer of getLogLines. The payloads are stored JSON, copied as they are.
func (s *server) writeLines(w http.ResponseWriter, job *Job, from, limit int) error {
	total := job.logs.length()
	var body bytes.Buffer
	fmt.Fprintf(&body, `{"total":%d,"from":%d,"lines":[`, total, from)
	for after, n := from-1, 0; n < limit; {
		res, err := job.logs.read(after)
		if err != nil {
			return fmt.Errorf("read log of job %s: %w", job.ID, err)
		}
		if len(res.recs) == 0 {
			break
		}
		for _, rec := range res.recs[:min(len(res.recs), limit-n)] {
			if n > 0 {
				body.WriteByte(',')
			}
			body.Write(rec.data)
			n++
		}
		after += len(res.recs)
	}
	body.WriteString("]}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write(body.Bytes())
	return nil
}

// logMatch is one line a search found.
type logMatch struct {
	N    int    `json:"n"`
	Line string `json:"line"`
}

// searchLog answers the lines of a job's log that hold q, any case: from line `from` on, or
// with backward=1 from it back, at most limit of them, and where to go on (0: the search
// reached the end of the log, or its start).
func (s *server) searchLog(w http.ResponseWriter, r *http.Request) {
	job, err := s.sched.get(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	query := q.Get("q")
	switch {
	case query == "":
		s.writeError(w, r, invalidf("q: the text to search for is missing"))
		return
	case len(query) > maxQueryBytes || !utf8.ValidString(query):
		s.writeError(w, r, invalidf("q: must be valid UTF-8 of at most %d bytes", maxQueryBytes))
		return
	}
	from, err := queryInt(q.Get("from"), "from", 1, 1, 1<<62)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit, err := queryInt(q.Get("limit"), "limit", defaultMatches, 1, maxMatches)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	backward := q.Get("backward")
	if backward != "" && backward != "0" && backward != "1" {
		s.writeError(w, r, invalidf("backward: %q is not 0 or 1", backward))
		return
	}
	m := newLineMatcher(query)
	var matches []logMatch
	var next int
	if backward == "1" {
		matches, next, err = searchBackward(job.logs, m, from, limit)
	} else {
		matches, next, err = searchForward(job.logs, m, from, limit)
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("search log of job %s: %w", job.ID, err))
		return
	}
	if matches == nil {
		matches = []logMatch{}
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"matches": matches, "next": next})
}

// searchForward finds up to limit matches at line from or after it.
func searchForward(l *eventLog, m *lineMatcher, from, limit int) ([]logMatch, int, error) {
	var matches []logMatch
	next := 0
	err := l.scan(from-1, func(id int, payload []byte) bool {
		if line, ok := m.match(payload); ok {
			if len(matches) == limit {
				next = id
				return false
			}
			matches = append(matches, logMatch{N: id, Line: line})
		}
		return true
	})
	return matches, next, err
}

// searchBackward finds up to limit matches at line from or before it, the nearest first. It
// reads the log from its start, keeping the last limit matches.
func searchBackward(l *eventLog, m *lineMatcher, from, limit int) ([]logMatch, int, error) {
	var found []logMatch // the matches so far, beyond limit shifted out at the front
	more := false        // a match was shifted out: there is more before
	err := l.scan(0, func(id int, payload []byte) bool {
		if id > from {
			return false
		}
		if line, ok := m.match(payload); ok {
			if len(found) == limit {
				found, more = found[1:], true
			}
			found = append(found, logMatch{N: id, Line: line})
		}
		return true
	})
	matches := make([]logMatch, len(found))
	for i, f := range found {
		matches[len(found)-1-i] = f
	}
	next := 0
	if more {
		next = found[0].N - 1
	}
	return matches, next, err
}

// lineMatcher finds a text in stored log payloads, any case. Most payloads do not match, so
// it first looks for the text in the payload's raw JSON, which costs no decoding, when that
// look cannot miss a match: the text is ASCII with nothing JSON escapes. Only a payload that
// passes is decoded and checked for real.
type lineMatcher struct {
	lower []byte // the query, lower case
	raw   bool   // the raw look may be used
}

func newLineMatcher(query string) *lineMatcher {
	raw := true
	for i := 0; i < len(query); i++ {
		if c := query[i]; c >= utf8.RuneSelf || c < 0x20 || c == '"' || c == '\\' {
			raw = false
		}
	}
	return &lineMatcher{lower: []byte(strings.ToLower(query)), raw: raw}
}

// logLinePrefix and logLineEnd enclose the line in every stored log payload, whose other
// fields follow it (see appendLogPayload).
var (
	logLinePrefix = []byte(`{"line":"`)
	logLineEnd    = []byte(`","timestamp":"`)
)

// match reports whether the payload's line holds the query, and returns the line.
func (m *lineMatcher) match(payload []byte) (string, bool) {
	if m.raw {
		text := payload
		if end := bytes.LastIndex(payload, logLineEnd); end >= len(logLinePrefix) {
			text = payload[len(logLinePrefix):end]
		}
		if !containsFold(text, m.lower) {
			return "", false
		}
	}
	var p struct {
		Line string `json:"line"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return "", false
	}
	return p.Line, strings.Contains(strings.ToLower(p.Line), string(m.lower))
}

// containsFold reports whether s holds lower, an ASCII lower-case text, in any ASCII case.
// Candidates are found with bytes.IndexByte, which is fast, for each case of the first byte.
func containsFold(s, lower []byte) bool {
	if len(lower) == 0 {
		return true
	}
	first, other := lower[0], lower[0]
	if 'a' <= first && first <= 'z' {
		other = first - 'a' + 'A'
	}
	for i := 0; i+len(lower) <= len(s); {
		j := bytes.IndexByte(s[i:], first)
		if other != first {
			if k := bytes.IndexByte(s[i:], other); k >= 0 && (j < 0 || k < j) {
				j = k
			}
		}
		if j < 0 {
			return false
		}
		i += j
		if i+len(lower) > len(s) {
			return false
		}
		if equalFoldASCII(s[i+1:i+len(lower)], lower[1:]) {
			return true
		}
		i++
	}
	return false
}

// equalFoldASCII reports whether s equals lower, an ASCII lower-case text, in any ASCII case.
func equalFoldASCII(s, lower []byte) bool {
	for i := range lower {
		if asciiLower(s[i]) != lower[i] {
			return false
		}
	}
	return true
}

func asciiLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// queryInt reads a whole-number query parameter from min to max; empty means fallback.
func queryInt(raw, name string, fallback, min, max int) (int, error) {
	if raw == "" {
		return fallback, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < min || n > max {
		return 0, invalidf("%s: %q is not a whole number from %d to %d", name, raw, min, max)
	}
	return n, nil
}
