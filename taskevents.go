package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// callbackPlugin is Charon's Ansible callback plugin. The runner writes it into each job's work
// dir and enables it; it sends task and host events to charond over a pipe of their own.
//
//go:embed callback/charon_events.py
var callbackPlugin []byte

// callbackName is the plugin's name, as Ansible's callbacks_enabled setting names it.
const callbackName = "charon_events"

// eventFields are the fields of a task or host event, as the plugin sends them and as the
// events stream carries them.
type eventFields struct {
	Playbook     string                `json:"playbook,omitempty"`
	Play         string                `json:"play,omitempty"`
	Task         string                `json:"task,omitempty"`
	Action       string                `json:"action,omitempty"`
	Host         string                `json:"host,omitempty"`
	Changed      *bool                 `json:"changed,omitempty"`
	Duration     *float64              `json:"duration,omitempty"`
	Msg          string                `json:"msg,omitempty"`
	Item         string                `json:"item,omitempty"`
	IgnoreErrors bool                  `json:"ignore_errors,omitempty"`
	NoLog        bool                  `json:"no_log,omitempty"`
	Handler      bool                  `json:"handler,omitempty"`
	Hosts        map[string]hostCounts `json:"hosts,omitempty"`
	// Artifacts is what the playbook published with set_stats, with the recap; ArtifactsDropped
	// is its size in bytes when it was too large to send.
	Artifacts        map[string]any `json:"artifacts,omitempty"`
	ArtifactsDropped int            `json:"artifacts_dropped,omitempty"`
}

// pluginEvent is one line the plugin writes.
type pluginEvent struct {
	Event string `json:"event"`
	eventFields
}

// taskEvent is a task or host event on the events stream: the same envelope as a status
// event, with the event's own fields.
type taskEvent struct {
	Type      string    `json:"type"`
	JobID     string    `json:"job_id"`
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message"`
	eventFields
}

// hostCounts are one host's totals, as Ansible's recap counts them.
type hostCounts struct {
	OK          int `json:"ok"`
	Changed     int `json:"changed"`
	Unreachable int `json:"unreachable"`
	Failed      int `json:"failed"`
	Skipped     int `json:"skipped"`
	Rescued     int `json:"rescued"`
	Ignored     int `json:"ignored"`
}

// jobSummary says what happened in a job without reading its log: each host's counts and the
// tasks that failed.
type jobSummary struct {
	Hosts       map[string]hostCounts `json:"hosts"`
	FailedTasks []failedTask          `json:"failed_tasks"`
}

// failedTask is a task that failed (not ignored) or could not reach its host.
type failedTask struct {
	Host    string `json:"host"`
	Play    string `json:"play,omitempty"`
	Task    string `json:"task"`
	Message string `json:"message"`
}

// knownEvents are the plugin events charond passes on; anything else is dropped.
var knownEvents = map[string]bool{
	"playbook_on_start": true, "playbook_on_play_start": true, "playbook_on_task_start": true,
	"runner_on_ok": true, "runner_on_failed": true, "runner_on_skipped": true, "runner_on_unreachable": true,
	"runner_item_on_ok": true, "runner_item_on_failed": true, "runner_item_on_skipped": true,
	"playbook_on_stats": true,
}

// pluginLoaded is the plugin's first event, which tells charond the plugin runs.
const pluginLoaded = "charon_callback_loaded"

// decodePluginEvent reads one line from the plugin. ok is false for a line that is not a
// known event.
func decodePluginEvent(line []byte) (ev pluginEvent, ok bool) {
	if err := json.Unmarshal(line, &ev); err != nil {
		return ev, false
	}
	return ev, ev.Event == pluginLoaded || knownEvents[ev.Event]
}

// redact masks secret values in every text field of the event.
func (f *eventFields) redact(r *redactor) {
	// Host names are not masked: they are the job's own inventory, shown with the job.
	for _, s := range []*string{&f.Playbook, &f.Play, &f.Task, &f.Action, &f.Msg, &f.Item} {
		*s = r.apply(*s)
	}
	if f.Artifacts != nil {
		f.Artifacts = r.applyDeep(maskVariables(f.Artifacts)).(map[string]any)
	}
}

// describe is the event's message: what Ansible's default output would say about it.
func (ev *pluginEvent) describe() string {
	host := "[" + ev.Host + "]"
	if ev.Item != "" {
		host += " (item=" + ev.Item + ")"
	}
	withMsg := func(s string) string {
		if ev.Msg != "" {
			s += ": " + ev.Msg
		}
		return s
	}
	switch ev.Event {
	case "playbook_on_start":
		return "Playbook " + ev.Playbook + " started"
	case "playbook_on_play_start":
		return "PLAY [" + ev.Play + "]"
	case "playbook_on_task_start":
		if ev.Handler {
			return "RUNNING HANDLER [" + ev.Task + "]"
		}
		return "TASK [" + ev.Task + "]"
	case "runner_on_ok", "runner_item_on_ok":
		if ev.Changed != nil && *ev.Changed {
			return "changed: " + host
		}
		return "ok: " + host
	case "runner_on_failed", "runner_item_on_failed":
		s := withMsg("failed: " + host)
		if ev.IgnoreErrors {
			s += " (ignored)"
		}
		return s
	case "runner_on_skipped", "runner_item_on_skipped":
		return "skipping: " + host
	case "runner_on_unreachable":
		return withMsg("unreachable: " + host)
	case "playbook_on_stats":
		return "PLAY RECAP " + recapText(ev.Hosts)
	}
	return ev.Event
}

// recapText writes the counts the way Ansible's recap does, one host after another.
func recapText(hosts map[string]hostCounts) string {
	names := make([]string, 0, len(hosts))
	for h := range hosts {
		names = append(names, h)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, h := range names {
		c := hosts[h]
		parts[i] = fmt.Sprintf("%s: ok=%d changed=%d unreachable=%d failed=%d skipped=%d rescued=%d ignored=%d",
			h, c.OK, c.Changed, c.Unreachable, c.Failed, c.Skipped, c.Rescued, c.Ignored)
	}
	return strings.Join(parts, "; ")
}

// add folds an event into the summary; the caller holds the job's lock.
func (s *jobSummary) add(ev *pluginEvent) {
	switch {
	case ev.Event == "playbook_on_stats":
		s.Hosts = ev.Hosts
	case ev.Event == "runner_on_unreachable", ev.Event == "runner_on_failed" && !ev.IgnoreErrors:
		msg := ev.Msg
		if ev.NoLog {
			msg = "(output hidden: the task has no_log)"
		}
		s.FailedTasks = append(s.FailedTasks, failedTask{Host: ev.Host, Play: ev.Play, Task: ev.Task, Message: msg})
	}
}

// secretWords mark a variable as secret when its name contains one of them.
var secretWords = []string{"password", "passwd", "secret", "token", "key"}

// masked is what a secret value is shown as.
const masked = "********"

// isSecretName reports whether a variable's name marks its value as secret.
func isSecretName(name string) bool {
	lower := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// maskVariables returns a copy of the variables in which the value of every secret one, at
// any depth (db: {password: ...} too), is replaced by masked, for showing a job.
func maskVariables(vars map[string]any) map[string]any {
	return maskValue(vars).(map[string]any)
}

func maskValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			if isSecretName(k) {
				out[k] = masked
			} else {
				out[k] = maskValue(item)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = maskValue(item)
		}
		return out
	}
	return v
}

// storedVariablesLocked is what the journal keeps of the job's variables: all of them while the
// job may still run, since a restart needs them; once it has ended, the secret ones masked, so
// the store does not keep secrets for the job's whole retention. j.mu is held.
func (j *Job) storedVariablesLocked() map[string]any {
	if j.st.Status.Final() {
		return maskVariables(j.Spec.Variables)
	}
	return j.Spec.Variables
}

// hasSecrets reports whether any variable, at any depth, has a secret name.
func hasSecrets(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, item := range v {
			if isSecretName(k) || hasSecrets(item) {
				return true
			}
		}
	case []any:
		for _, item := range v {
			if hasSecrets(item) {
				return true
			}
		}
	}
	return false
}

// minMaskedLen is the shortest secret value masked inside free text. Masking a value such as
// "1", "true" or "root" wherever it appears would garble every message and recap, and hide
// nothing: a value that short is no secret from anyone who guesses.
const minMaskedLen = 6

// redactor replaces the values of a job's secret variables wherever they appear in text.
type redactor struct {
	replacer *strings.Replacer
}

// newRedactor collects the text of every value under a secret name, at any depth (each scalar
// inside a list or map too). Values shorter than minMaskedLen are left out, and so are the
// public texts (the job's host names, which the job shows openly anyway).
func newRedactor(vars map[string]any, public ...string) *redactor {
	shown := make(map[string]bool, len(public))
	for _, h := range public {
		shown[h] = true
	}
	var secrets []string
	var collect func(v any, secret bool)
	collect = func(v any, secret bool) {
		switch v := v.(type) {
		case map[string]any:
			for k, item := range v {
				collect(item, secret || isSecretName(k))
			}
		case []any:
			for _, item := range v {
				collect(item, secret)
			}
		case nil:
		default:
			if s := fmt.Sprint(v); secret && len(s) >= minMaskedLen && !shown[s] {
				secrets = append(secrets, s)
			}
		}
	}
	collect(vars, false)
	if len(secrets) == 0 {
		return &redactor{}
	}
	// Longest first, so a secret that contains another is masked whole.
	sort.Slice(secrets, func(a, b int) bool { return len(secrets[a]) > len(secrets[b]) })
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, masked)
	}
	return &redactor{replacer: strings.NewReplacer(pairs...)}
}

// applyDeep masks secret values in every string inside v, a decoded JSON value, in keys too.
func (r *redactor) applyDeep(v any) any {
	switch v := v.(type) {
	case string:
		return r.apply(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			out[r.apply(k)] = r.applyDeep(item)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = r.applyDeep(item)
		}
		return out
	}
	return v
}

func (r *redactor) apply(s string) string {
	if r.replacer == nil || s == "" {
		return s
	}
	return r.replacer.Replace(s)
}

// runEvents turns one run's plugin lines into events on the job's events stream and keeps the
// job's summary. Its methods are called from the run's pipe readers.
type runEvents struct {
	job    *Job
	redact *redactor
	now    func() time.Time
	log    *slog.Logger

	counted *counter // counts the events recorded; nil counts nothing

	loaded  atomic.Bool // the plugin said it runs
	sawPlay atomic.Bool // the log shows a play ran, so the plugin should have spoken
}

func newRunEvents(job *Job, now func() time.Time, log *slog.Logger) *runEvents {
	return &runEvents{job: job, redact: newRedactor(map[string]any{"variables": job.Spec.Variables, "inventory": job.Spec.InventoryGroups}, job.Spec.hostNames()...), now: now, log: log}
}

// pluginLine handles one line from the plugin's pipe.
func (re *runEvents) pluginLine(line []byte) {
	ev, ok := decodePluginEvent(line)
	if !ok {
		re.log.Warn("ignoring a line from the callback plugin", "job", re.job.ID, "bytes", len(line))
		return
	}
	if ev.Event == pluginLoaded {
		re.loaded.Store(true)
		return
	}
	ev.redact(re.redact)
	out := taskEvent{Type: ev.Event, JobID: re.job.ID, Timestamp: re.now().UTC(), Message: ev.describe(), eventFields: ev.eventFields}
	payload, err := json.Marshal(out)
	if err != nil {
		re.log.Warn("cannot encode a task event", "job", re.job.ID, "err", err)
		return
	}
	re.job.noteTaskEvent(&ev)
	if err := re.job.events.appendData(payload); err != nil {
		re.log.Warn("cannot record a task event", "job", re.job.ID, "err", err)
		return
	}
	re.counted.add(1)
}

// noteOutput watches the log for the start of a play.
func (re *runEvents) noteOutput(lines [][]byte) {
	if re.sawPlay.Load() {
		return
	}
	for _, l := range lines {
		if bytes.HasPrefix(l, []byte("PLAY [")) {
			re.sawPlay.Store(true)
			return
		}
	}
}

// warnIfMissing adds a warning event when plays ran but the plugin never spoke, so a watcher
// knows why there are no task events. The job itself is not affected.
func (re *runEvents) warnIfMissing() {
	if re.loaded.Load() || !re.sawPlay.Load() {
		return
	}
	payload, _ := json.Marshal(taskEvent{Type: "warning", JobID: re.job.ID, Timestamp: re.now().UTC(),
		Message: "Task and host events are unavailable for this job: Ansible did not load Charon's callback plugin (" +
			callbackName + "). The job's log may hold Ansible's warning saying why."})
	if err := re.job.events.appendData(payload); err != nil {
		re.log.Warn("cannot record a warning event", "job", re.job.ID, "err", err)
	}
}

// clone copies a summary, so it can be read without the job's lock.
func (s *jobSummary) clone() *jobSummary {
	if s == nil {
		return nil
	}
	c := &jobSummary{Hosts: make(map[string]hostCounts, len(s.Hosts)), FailedTasks: append([]failedTask{}, s.FailedTasks...)}
	for h, n := range s.Hosts {
		c.Hosts[h] = n
	}
	return c
}
