package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// The fuzz targets here check the two places where bytes from outside meet charond's own
// formats: job documents from clients (FuzzParseJobSpec) and playbook output on its way to
// SSE clients (FuzzSSEEncoding). Their seed corpora live in testdata/fuzz/<target>/; an
// input the fuzzer finds failing is kept there too, so that it stays a regular test.
//
// `go test -run Fuzz .` runs the seeds as ordinary tests; to fuzz, run one target at a time:
//
//	go test -run '^$' -fuzz '^FuzzParseJobSpec$' -fuzztime 10s -fuzzminimizetime 2s .
//	go test -run '^$' -fuzz '^FuzzSSEEncoding$' -fuzztime 10s -fuzzminimizetime 2s .
//
// The fuzzer also minimizes every new interesting input, for up to -fuzzminimizetime (60s by
// default); descendants of the larger seeds (the alias bomb, the deep nesting) can keep both
// workers minimizing for most of a short run, so short runs should bound it.

const (
	// fuzzMaxBody is charond's default -max-body: the handler refuses larger bodies before
	// parseJobSpec sees them, so the fuzzer need not spend time on them.
	fuzzMaxBody = 1 << 20
	// fuzzParseBudget is how long one parse may take. The seeds parse in at most tens of
	// milliseconds (the 10,000-level nesting is the slowest); the budget is wide so that a
	// loaded machine, the race detector and coverage instrumentation do not make it flaky, yet
	// an alias bomb that got expanded takes far longer than this.
	fuzzParseBudget = 2 * time.Second
)

// FuzzParseJobSpec feeds parseJobSpec arbitrary documents, as YAML and as JSON. Whatever the
// input, it must return in time, and return either a spec that satisfies every invariant the
// rest of charond relies on, or an *apiError of kind errInvalid (a 400) with a message.
func FuzzParseJobSpec(f *testing.F) {
	lim := fuzzPlaybookDir(f)
	f.Fuzz(func(t *testing.T, body []byte, isJSON bool) {
		if len(body) > fuzzMaxBody {
			t.Skip("larger than the handler's body limit")
		}
		start := time.Now()
		spec, err := parseJobSpec(body, isJSON, lim)
		if elapsed := time.Since(start); elapsed > fuzzParseBudget {
			t.Errorf("parseJobSpec took %v, want under %v", elapsed, fuzzParseBudget)
		}
		switch {
		case err != nil && spec != nil:
			t.Fatalf("parseJobSpec returned both a spec and an error: %v", err)
		case err != nil:
			fuzzCheckSpecError(t, err)
		case spec == nil:
			t.Fatal("parseJobSpec returned neither a spec nor an error")
		default:
			fuzzCheckSpec(t, spec, lim)
		}
	})
}

// fuzzPlaybookDir makes the playbook dir for FuzzParseJobSpec: base/playbooks holding the
// playbook site.yml, so that path cases can succeed, and a symlink escape.yml to the file
// base/outside.yml beside it, so that a path that gets out has something to find.
func fuzzPlaybookDir(f *testing.F) specLimits {
	base, err := filepath.EvalSymlinks(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	dir, outside := filepath.Join(base, "playbooks"), filepath.Join(base, "outside.yml")
	if err := os.Mkdir(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	const play = "- hosts: localhost\n  tasks: []\n"
	for _, p := range []string{filepath.Join(dir, "site.yml"), outside} {
		if err := os.WriteFile(p, []byte(play), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape.yml")); err != nil {
		f.Fatal(err)
	}
	return specLimits{PlaybookDir: dir, DefaultTimeout: 10 * time.Minute, MaxTimeout: 2 * time.Hour, MaxForks: 50, InventoryDir: dir}
}

// fuzzCheckSpecError checks that a refusal reaches the client as a 400 that says something.
func fuzzCheckSpecError(t *testing.T, err error) {
	t.Helper()
	var ae *apiError
	if !errors.As(err, &ae) {
		t.Fatalf("error is a %T, not an *apiError: %v", err, err)
	}
	if ae.kind != errInvalid {
		t.Errorf("error kind = %d, want errInvalid (%d): %v", ae.kind, errInvalid, err)
	}
	status, msg := httpStatus(err)
	if status != http.StatusBadRequest {
		t.Errorf("httpStatus = %d, want %d: %v", status, http.StatusBadRequest, err)
	}
	if strings.TrimSpace(msg) == "" {
		t.Errorf("error message is empty (%q)", msg)
	}
}

// fuzzCheckSpec checks the invariants of an accepted spec, each independently of how
// parseJobSpec enforces it.
func fuzzCheckSpec(t *testing.T, spec *JobSpec, lim specLimits) {
	t.Helper()
	if spec.Name == "" {
		t.Error("Name is empty")
	}
	if strings.TrimSpace(spec.Playbook) == "" {
		t.Errorf("Playbook is empty or blank: %q", spec.Playbook)
	}
	texts := map[string]string{"Name": spec.Name, "Description": spec.Description, "Playbook": spec.Playbook}
	for i, h := range spec.Inventory {
		texts[fmt.Sprintf("Inventory[%d]", i)] = h
	}
	for field, v := range texts {
		if strings.ContainsRune(v, 0) {
			t.Errorf("%s holds a NUL byte: %q", field, v)
		}
		// These are shown back to clients in JSON, which would quietly change invalid UTF-8.
		if !utf8.ValidString(v) {
			t.Errorf("%s is not valid UTF-8: %q", field, v)
		}
	}
	if spec.Priority < minPriority || spec.Priority > maxPriority {
		t.Errorf("Priority = %d, want %d..%d", spec.Priority, minPriority, maxPriority)
	}
	if spec.Timeout <= 0 || spec.Timeout > lim.MaxTimeout {
		t.Errorf("Timeout = %v, want above 0 and at most %v", spec.Timeout, lim.MaxTimeout)
	}
	switch {
	case spec.InventoryPath != "":
		if real, err := filepath.EvalSymlinks(spec.InventoryPath); err != nil || !isInside(real, lim.InventoryDir) {
			t.Errorf("InventoryPath = %q lies outside %s (%v)", spec.InventoryPath, lim.InventoryDir, err)
		}
	case spec.InventoryGroups != nil:
		for _, h := range spec.hostNames() {
			fuzzCheckInventory(t, []string{h}) // a host may be in several groups
		}
		if len(spec.hostNames()) == 0 {
			t.Error("a mapping inventory holds no host")
		}
	default:
		fuzzCheckInventory(t, spec.Inventory)
	}
	fuzzCheckVariables(t, spec.Variables)
	fuzzCheckPlaybook(t, spec, lim.PlaybookDir)
	fuzzCheckOptions(t, spec, lim)
}

// fuzzCheckOptions checks that no launch option can become another option, a file of hosts,
// a template or more than one argument.
func fuzzCheckOptions(t *testing.T, spec *JobSpec, lim specLimits) {
	t.Helper()
	texts := map[string]string{"Limit": spec.Limit, "StartAtTask": spec.StartAtTask}
	for i, tag := range append(append([]string{}, spec.Tags...), spec.SkipTags...) {
		texts[fmt.Sprintf("tag %d", i)] = tag
		if tag == "" || strings.ContainsAny(tag, ", \t\n") {
			t.Errorf("tag %q is empty or holds a comma or white space", tag)
		}
	}
	for field, v := range texts {
		if strings.Contains(v, "{{") || strings.Contains(v, "{%") || strings.Contains(v, "{#") || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			t.Errorf("%s = %q holds a template marker or a control character", field, v)
		}
	}
	if l := spec.Limit; l != "" && (l[0] == '-' || l[0] == '@' || strings.IndexFunc(l, unicode.IsSpace) >= 0) {
		t.Errorf("Limit = %q starts with - or @, or holds white space", l)
	}
	if spec.Verbosity < 0 || spec.Verbosity > 4 || spec.Forks < 0 || spec.Forks > lim.MaxForks {
		t.Errorf("Verbosity = %d, Forks = %d out of range", spec.Verbosity, spec.Forks)
	}
}

func fuzzCheckInventory(t *testing.T, hosts []string) {
	t.Helper()
	if len(hosts) == 0 {
		t.Error("Inventory is empty")
	}
	seen := map[string]bool{}
	for i, h := range hosts {
		switch {
		case h == "":
			t.Errorf("Inventory[%d] is empty", i)
		case h[0] == '-':
			t.Errorf("Inventory[%d] = %q starts with '-'", i, h)
		case strings.ContainsRune(h, ','):
			t.Errorf("Inventory[%d] = %q holds a comma", i, h)
		case strings.ContainsAny(h, "[]"):
			t.Errorf("Inventory[%d] = %q holds a range pattern", i, h)
		case strings.IndexFunc(h, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
			// Control characters include NUL.
			t.Errorf("Inventory[%d] = %q holds white space or a control character", i, h)
		case strings.Contains(h, "{{") || strings.Contains(h, "{%") || strings.Contains(h, "{#"):
			t.Errorf("Inventory[%d] = %q holds a template marker", i, h)
		case strings.EqualFold(h, "all") || strings.EqualFold(h, "ungrouped"):
			t.Errorf("Inventory[%d] = %q is a built-in group", i, h)
		case strings.IndexFunc(h, func(r rune) bool {
			return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune(".-_:", r)
		}) >= 0:
			t.Errorf("Inventory[%d] = %q holds a character that is not part of a host name", i, h)
		case seen[h]:
			t.Errorf("Inventory[%d] = %q is listed twice", i, h)
		}
		seen[h] = true
	}
}

// fuzzCheckVariables checks that the variables can be written as the JSON extra-vars file,
// under names Ansible accepts.
func fuzzCheckVariables(t *testing.T, vars map[string]any) {
	t.Helper()
	if vars == nil {
		t.Error("Variables is nil, want an empty map at least")
	}
	if _, err := json.Marshal(vars); err != nil {
		t.Errorf("Variables cannot be encoded as JSON: %v (%#v)", err, vars)
	}
	for name := range vars {
		ok := name != "" && !('0' <= name[0] && name[0] <= '9')
		for _, c := range []byte(name) {
			ok = ok && (c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z')
		}
		if !ok {
			t.Errorf("variable name %q is not an Ansible name", name)
		}
	}
}

// fuzzCheckPlaybook checks that a playbook is either embedded (text of more than one line) or
// a path resolved to a regular file inside the playbook dir, symlinks and all.
func fuzzCheckPlaybook(t *testing.T, spec *JobSpec, dir string) {
	t.Helper()
	p := spec.PlaybookPath
	if p == "" {
		if !strings.Contains(spec.Playbook, "\n") {
			t.Errorf("Playbook %q is a single line but has no PlaybookPath", spec.Playbook)
		}
		return
	}
	if strings.Contains(spec.Playbook, "\n") {
		t.Errorf("Playbook %q holds a newline but was taken as the path %s", spec.Playbook, p)
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || !strings.HasPrefix(p, dir+string(filepath.Separator)) {
		t.Fatalf("PlaybookPath = %q, want a clean absolute path inside %s", p, dir)
	}
	if real, err := filepath.EvalSymlinks(p); err != nil || real != p {
		t.Errorf("PlaybookPath %s resolves to %q (%v), want itself", p, real, err)
	}
	if info, err := os.Lstat(p); err != nil || !info.Mode().IsRegular() {
		t.Errorf("PlaybookPath %s is not a regular file (%v)", p, err)
	}
}

// fuzzLogTime is the timestamp of every fuzzed log line; its nanoseconds check that the
// payload keeps them.
var fuzzLogTime = time.Date(2023, 12, 7, 15, 30, 45, 123456789, time.UTC)

// FuzzSSEEncoding feeds arbitrary output lines through the SSE encoders. Whatever bytes a
// playbook prints, each frame must be one well-formed event whose data is one line of valid
// JSON that gives back the line, with invalid UTF-8 replaced; and the frames in a row must be
// a stream of exactly those events.
func FuzzSSEEncoding(f *testing.F) {
	f.Fuzz(func(t *testing.T, line []byte, id uint32, streamChoice uint8) {
		n := int(id & math.MaxInt32) // event ids are positive ints; the mask keeps 32-bit platforms in range
		stream := [...]string{"stdout", "stderr"}[streamChoice%2]
		want := fuzzValidUTF8(line)
		// appendJSONString promises what encoding/json does with the same bytes.
		var viaJSON string
		if b, err := json.Marshal(string(line)); err != nil || json.Unmarshal(b, &viaJSON) != nil || viaJSON != want {
			t.Errorf("encoding/json gives back %q (%v), want %q", viaJSON, err, want)
		}

		logFrame := fuzzCheckLogFrame(t, line, n, stream, want)
		retry := time.Duration(id%10000) * time.Millisecond
		connected, completed := fuzzCheckNotices(t, line, n, retry, want)

		all := bytes.Join([][]byte{connected, logFrame, completed}, nil)
		evs, err := parseSSE(all)
		if err != nil {
			t.Fatalf("connected+log+completed is not a valid event stream: %v\n%q", err, all)
		}
		var names []string
		for _, ev := range evs {
			names = append(names, ev.Event+"#"+ev.ID)
		}
		if got, want := strings.Join(names, " "), fmt.Sprintf("connected# log#%d completed#%d", n, n); got != want {
			t.Errorf("connected+log+completed dispatches %s, want %s", got, want)
		}
	})
}

// fuzzCheckLogFrame frames a log line as eventLog.appendData does, checks the frame and
// returns it.
func fuzzCheckLogFrame(t *testing.T, line []byte, id int, stream, want string) []byte {
	t.Helper()
	payload := appendLogPayload(nil, line, fuzzLogTime, stream)
	rec := encodeRecord(id, "log", payload)
	if !bytes.Equal(rec.data, payload) {
		t.Errorf("record data = %q, want the payload %q", rec.data, payload)
	}
	ev := fuzzOneEvent(t, "log frame", rec.frame, "log", strconv.Itoa(id))
	fuzzCheckData(t, "log", ev.Data)
	var got struct {
		Line      string `json:"line"`
		Timestamp string `json:"timestamp"`
		Stream    string `json:"stream"`
	}
	fuzzDecodeStrict(t, "log", ev.Data, &got, "line", "timestamp", "stream")
	if got.Line != want {
		t.Errorf("log line = %q, want %q (input %q)", got.Line, want, line)
	}
	if ts, err := time.Parse(time.RFC3339Nano, got.Timestamp); err != nil || !ts.Equal(fuzzLogTime) {
		t.Errorf("log timestamp = %q (%v), want %s", got.Timestamp, err, fuzzLogTime.Format(time.RFC3339Nano))
	}
	if got.Stream != stream {
		t.Errorf("log stream = %q, want %q", got.Stream, stream)
	}
	return rec.frame
}

// fuzzCheckNotices builds `connected` (with a retry field unless retry is 0, and no id) and
// `completed` (with the id) carrying the line as their message, checks them and returns them.
func fuzzCheckNotices(t *testing.T, line []byte, id int, retry time.Duration, want string) (connected, completed []byte) {
	t.Helper()
	code := -id // any int will do; negative ones too
	connected = noticeFrame("connected", -1, connectedData{Message: string(line), Line: string(line), Timestamp: fuzzLogTime}, retry)
	completed = noticeFrame("completed", id, completedData{Message: string(line), Line: string(line), Timestamp: fuzzLogTime, Status: StatusFailed, ExitCode: &code}, 0)
	wantRetry := int64(-1) // noticeFrame leaves the field out for 0
	if retry > 0 {
		wantRetry = retry.Milliseconds()
	}
	for _, nt := range []struct {
		name, id string
		frame    []byte
		retry    int64
		keys     []string
	}{
		{"connected", "", connected, wantRetry, []string{"message", "line", "timestamp"}},
		{"completed", strconv.Itoa(id), completed, -1, []string{"message", "line", "timestamp", "status", "exit_code"}},
	} {
		ev := fuzzOneEvent(t, nt.name+" frame", nt.frame, nt.name, nt.id)
		fuzzCheckData(t, nt.name, ev.Data)
		var d struct {
			Message, Line string
			ExitCode      *int `json:"exit_code"`
		}
		fuzzDecodeStrict(t, nt.name, ev.Data, &d, nt.keys...)
		if d.Message != want || d.Line != want {
			t.Errorf("%s message, line = %q, %q, want %q", nt.name, d.Message, d.Line, want)
		}
		if nt.name == "completed" && (d.ExitCode == nil || *d.ExitCode != code) {
			t.Errorf("completed exit_code = %v, want %d", d.ExitCode, code)
		}
		if ev.Retry != nt.retry {
			t.Errorf("%s retry = %d, want %d (-1: none)", nt.name, ev.Retry, nt.retry)
		}
	}
	return connected, completed
}

// fuzzValidUTF8 is what a JSON round trip makes of b: each byte that does not start a valid
// UTF-8 sequence becomes one U+FFFD, as appendJSONString and encoding/json both do. (This is
// not strings.ToValidUTF8, which replaces a whole run of invalid bytes with one U+FFFD.)
func fuzzValidUTF8(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b) // utf8.RuneError, 1 for an invalid byte
		sb.WriteRune(r)
		b = b[size:]
	}
	return sb.String()
}

// fuzzOneEvent parses a frame that must dispatch exactly one event with the given name and id.
func fuzzOneEvent(t *testing.T, what string, frame []byte, event, id string) sseEvent {
	t.Helper()
	evs, err := parseSSE(frame)
	if err != nil {
		t.Fatalf("%s is not a valid event stream: %v\n%q", what, err, frame)
	}
	if len(evs) != 1 {
		t.Fatalf("%s dispatches %d events, want 1:\n%q", what, len(evs), frame)
	}
	ev := evs[0]
	if ev.Event != event || ev.ID != id || ev.DataLines != 1 {
		t.Fatalf("%s dispatches event %q, id %q with %d data lines, want %q, id %q, 1 data line:\n%q",
			what, ev.Event, ev.ID, ev.DataLines, event, id, frame)
	}
	return ev
}

// fuzzCheckData checks an event's data: one line of valid UTF-8 JSON with no raw control
// characters, nor U+2028 and U+2029, which JavaScript once took for line ends.
func fuzzCheckData(t *testing.T, what, data string) {
	t.Helper()
	if i := strings.IndexFunc(data, func(r rune) bool { return r < 0x20 || r == '\u2028' || r == '\u2029' }); i >= 0 {
		t.Errorf("%s data holds a raw %U at byte %d: %q", what, []rune(data[i:])[0], i, data)
	}
	if !utf8.ValidString(data) || !json.Valid([]byte(data)) {
		t.Fatalf("%s data is not valid UTF-8 JSON: %q", what, data)
	}
}

// fuzzDecodeStrict decodes a JSON object that must have exactly the given keys into v.
func fuzzDecodeStrict(t *testing.T, what, data string, v any, keys ...string) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(data), &fields); err != nil {
		t.Fatalf("%s data is not a JSON object: %v: %q", what, err, data)
	}
	for _, k := range keys {
		if _, ok := fields[k]; !ok {
			t.Errorf("%s data has no %q: %q", what, k, data)
		}
	}
	if len(fields) != len(keys) {
		t.Errorf("%s data has keys other than %v: %q", what, keys, data)
	}
	if err := json.Unmarshal([]byte(data), v); err != nil {
		t.Fatalf("%s data does not decode: %v: %q", what, err, data)
	}
}
