package main

// Tests that text from charond or from a job file reaches the terminal escaped, so that it
// cannot retitle the terminal, clear it, move the cursor or reorder a line, while the client's
// own colours still work.

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEscapeTerm(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"plain text", "Job finished successfully", "Job finished successfully"},
		{"emoji and non-ASCII letters", "⚠️ 📊 ünïcode 日本語 👨‍👩‍👧 �", "⚠️ 📊 ünïcode 日本語 👨‍👩‍👧 �"},
		{"tab stays", "a\tb", "a\tb"},
		{"backslash stays", `C:\temp\new \x1b`, `C:\temp\new \x1b`},
		{"OSC retitle", "\x1b]0;pwned\x07", `\x1b]0;pwned\a`},
		{"CSI clear screen", "\x1b[2J\x1b[Hgone", `\x1b[2J\x1b[Hgone`},
		{"BEL", "ding\x07", `ding\a`},
		{"CR overwrites the line", "ok\rFAKE", `ok\rFAKE`},
		{"LF", "one\ntwo", `one\ntwo`},
		{"backspace", "abc\b\b\bxyz", `abc\b\b\bxyz`},
		{"NUL", "a\x00b", `a\x00b`},
		{"other C0", "\x0b\x0c\x1f\x01", `\v\f\x1f\x01`},
		{"DEL", "a\x7fb", `a\x7fb`},
		{"C1 CSI", "\u009b2J", `\u009b2J`},
		{"C1 first and last", "\u0080\u009d\u009f", `\u0080\u009d\u009f`},
		{"bidi override", "user\u202eexe.txt", `user\u202eexe.txt`},
		{"bidi embeddings and isolates", "\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069",
			`\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069`},
		{"invalid UTF-8", "a\xffb\xfe", `a\xffb\xfe`},
		{"stray byte 0x9B is not C1 U+009B", "\x9b", `\x9b`},
		{"truncated sequence", "€\xe2\x82", `€\xe2\x82`},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := escapeTerm(tt.in); got != tt.want {
				t.Errorf("escapeTerm(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got := escapeTerm(tt.want); got != tt.want {
				t.Errorf("escaping again: escapeTerm(%q) = %q, want it unchanged", tt.want, got)
			}
		})
	}
}

// unsafeAt is the index in s of the first thing a terminal could act on: a control other than
// the tabs and line breaks the client writes itself, a C1 or bidi control, or a byte that is not
// UTF-8; -1 if there is none. It checks escapeTerm's work without using it.
func unsafeAt(s string) int {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"),
			r < 0x20 && r != '\n' && r != '\t', r >= 0x7f && r <= 0x9f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return i
		}
	}
	return -1
}

func assertTerminalSafe(t *testing.T, what, s string) {
	t.Helper()
	if i := unsafeAt(s); i >= 0 {
		t.Errorf("%s holds a raw control at byte %d (%q):\n%q", what, i, s[i:min(len(s), i+12)], s)
	}
}

// TestCommandsEscapeWhatCharondSends drives the commands against a fake charond whose log lines,
// events, job and errors carry escape sequences, and against job files that do.
func TestCommandsEscapeWhatCharondSends(t *testing.T) {
	dir := t.TempDir()
	writeFile := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	evilName := writeFile("name.yaml", "name: \"evil \\e]0;pwned\\a\"\nplaybook: |\n  - hosts: all\n")
	evilPath := writeFile("path.yaml", "name: x\nplaybook: \"site\\e]0;pwned\\a.yml\"\n")
	evilYAML := writeFile("yaml.yaml", "a: !!int \"\\e]0;pwned\\a\"\n")
	const play, task, host = "P\x1b[8m", "T\r", "h\x1b[2K"
	tests := []struct {
		name    string
		fake    *fakeCharond
		args    []string
		wantOut []string
		wantErr []string
	}{
		{
			name: "log lines",
			fake: &fakeCharond{logs: []string{
				logData("title \x1b]0;pwned\x07 set"),
				logData("\x1b[2J\x1b[Hcleared"),
				logData("\u009b31mred \u202eevil"),
				logData("bad \xff byte"), // json.Marshal makes it U+FFFD
			}},
			args: []string{"stream", "job-1"},
			wantOut: []string{
				`📝 LOG: title \x1b]0;pwned\a set` + "\n",
				`📝 LOG: \x1b[2J\x1b[Hcleared` + "\n",
				`📝 LOG: \u009b31mred \u202eevil` + "\n",
				"📝 LOG: bad \uFFFD byte\n",
			},
		},
		{
			name: "job events",
			fake: &fakeCharond{events: []string{
				status(40, "running", "Job \x1b]0;pwned\x07started"),
				playStart(41, play),
				taskStart(41, play, task, "debug"),
				hostResult("runner_on_failed", 41.5, play, task, host, kv{"msg": "boom\x1b[1A\nsecond\u009b"}),
				stats(42, map[string]hostStats{"h\x07": {OK: 1}}),
				jobEvent("odd\x1b[5m", 43, "what\u2066", nil),
			}},
			args: []string{"events", "job-1"},
			wantOut: []string{
				`🏃 running    Job \x1b]0;pwned\astarted` + "\n",
				`▶ PLAY [P\x1b[8m]` + "\n",
				`  TASK [T\r]` + "\n",
				`    ❌ h\x1b[2K: boom\x1b[1A` + "\n" + stampPad + `       second\u009b` + "\n",
				stampPad + `  h\a  ok=1 `,
				`📌 odd\x1b[5m: what\u2066` + "\n",
			},
		},
		{
			name:    "submitted job's name",
			fake:    &fakeCharond{},
			args:    []string{"submit", evilName},
			wantOut: []string{"   Job ID: job-1\n" + `   Name: evil \x1b]0;pwned\a` + "\n   Status: queued\n"},
		},
		{
			name: "charond's error and the job ID in it",
			fake: &fakeCharond{},
			args: []string{"stream", "nope\x1b]0;pwned\x07"},
			wantErr: []string{
				`❌ job not found: nope\x1b]0;pwned\a (HTTP 404)` + "\n",
				`charond knows no job nope\x1b]0;pwned\a.` + "\n",
			},
		},
		{
			name:    "playbook path from a job file",
			fake:    &fakeCharond{refuse: 400},
			args:    []string{"submit", evilPath},
			wantErr: []string{"playbook path was sent as " + filepath.Join(dir, `site\x1b]0;pwned\a.yml`) + "\n"},
		},
		{
			name:    "YAML mistake quoting the job file",
			fake:    &fakeCharond{},
			args:    []string{"submit", evilYAML},
			wantErr: []string{"❌ " + evilYAML + ": cannot decode !!str `\\x1b]0;pwned\\a` as a !!int (nothing was sent)\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fake.final = "completed"
			_, out, errOut := runClient(t, tt.fake.start(t).URL, tt.args...)

			wantInOutput(t, out.buf.String(), tt.wantOut...)
			wantInOutput(t, errOut, tt.wantErr...)
			assertTerminalSafe(t, "stdout", out.buf.String())
			assertTerminalSafe(t, "stderr", errOut)
		})
	}
}

// TestEscapeKeepsOwnColours checks that on a terminal the data is escaped inside the client's
// colour codes, and that those codes are all the output holds besides.
func TestEscapeKeepsOwnColours(t *testing.T) {
	tests := []struct {
		name  string
		print func(p *printer)
		want  string
	}{
		{
			name:  "log line",
			print: func(p *printer) { p.event("log", decodeData(logData("\x1b]0;pwned\x07"))) },
			want:  ansiDim + "[15:30:45]" + ansiReset + ` 📝 LOG: \x1b]0;pwned\a` + "\n",
		},
		{
			name: "host result",
			print: func(p *printer) {
				p.event("job_event", decodeData(hostResult("runner_on_ok", 41, "P", "T", "h\u009b8m", nil)))
			},
			want: ansiGreen + `    ✅ h\u009b8m` + ansiReset + "\n",
		},
		{
			name: "submitted job",
			print: func(p *printer) {
				p.submitted("✅ Job submitted!", job{ID: "j\x1b[A", Name: "n\u202e", Status: "s\x07"})
			},
			want: ansiGreen + "✅ Job submitted!" + ansiReset + "\n" +
				`   Job ID: j\x1b[A` + "\n" + `   Name: n\u202e` + "\n" + `   Status: s\a` + "\n",
		},
		{
			name:  "error over two lines",
			print: func(p *printer) { p.fail("%v", errors.New("a\x1b[2J\r\nb\x00")) },
			want:  ansiRed + `❌ a\x1b[2J` + ansiReset + "\n" + ansiRed + `b\x00` + ansiReset + "\n",
		},
	}
	ownCodes := strings.NewReplacer(ansiReset, "", ansiBold, "", ansiDim, "", ansiRed, "", ansiGreen, "",
		ansiYellow, "", ansiBlue, "", ansiMagenta, "", ansiCyan, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			p := &printer{out: &out, err: &out, color: true, loc: time.UTC}
			tt.print(p)
			if got := out.String(); !strings.Contains(got, tt.want) {
				t.Errorf("output:\n got %q\nwant it to hold %q", got, tt.want)
			}
			assertTerminalSafe(t, "output without the client's colours", ownCodes.Replace(out.String()))
		})
	}
}
