package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// This file holds what the scheduler tells the webhooks (webhook.go) when a job ends, and how
// it keeps track of what they delivered. A job that ends while webhooks are configured has
// webhook_pending set in the record that says it ended, in the same write; it is cleared, in
// a new version of the record, once every target has had the job's document or been given up
// on. At start, every ended job still pending is sent again: a job that ended just before a
// crash is still delivered after it, perhaps twice (receivers drop duplicates by
// X-Charon-Delivery).

// webhookDocument is the JSON body of a webhook: what a receiver needs to act on an ended
// job without calling back, and the address to call back at.
type webhookDocument struct {
	Event      string         `json:"event"` // job_ended
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	Status     Status         `json:"status"`
	ExitCode   *int           `json:"exit_code"`
	Message    string         `json:"message"`
	Priority   int            `json:"priority"`
	CreatedAt  time.Time      `json:"created_at"`
	StartedAt  *time.Time     `json:"started_at"`
	FinishedAt time.Time      `json:"finished_at"`
	Duration   float64        `json:"duration"` // seconds from start to end; 0 for a job that never started
	Summary    *jobSummary    `json:"summary"`
	Artifacts  map[string]any `json:"artifacts"`
	RelaunchOf *string        `json:"relaunch_of"`
	URL        string         `json:"url"` // the job in charond's API, from -public-url
}

// webhookBody encodes the document of an ended job's record, which masks its secrets.
func webhookBody(rec jobRecord, publicURL string) []byte {
	doc := webhookDocument{
		Event: "job_ended", ID: rec.ID, Name: rec.Name, Status: rec.Status, ExitCode: rec.ExitCode, Message: rec.Message,
		Priority: rec.Priority, CreatedAt: rec.CreatedAt, StartedAt: timeOrNull(rec.StartedAt), FinishedAt: rec.FinishedAt,
		Summary: rec.Summary, Artifacts: rec.Artifacts, RelaunchOf: stringOrNull(rec.RelaunchOf),
		URL: strings.TrimRight(publicURL, "/") + "/api/v1/jobs/" + rec.ID,
	}
	if !rec.StartedAt.IsZero() {
		doc.Duration = rec.FinishedAt.Sub(rec.StartedAt).Seconds()
	}
	body, err := json.Marshal(doc)
	if err != nil {
		panic("encoding a webhook document cannot fail: " + err.Error())
	}
	return body
}

// notifyEnded hands an ended job's document to the webhooks, if its record says it is due
// and charond has started sending: a job that ends before that (one a restart finds
// interrupted) is sent by redeliver.
func (s *scheduler) notifyEnded(rec jobRecord) {
	s.mu.Lock()
	live, publicURL := s.hooksLive, s.publicURL
	s.mu.Unlock()
	if live && rec.WebhookPending {
		s.hooks.deliver(rec.ID, webhookBody(rec, publicURL))
	}
}

// webhookDone records that every target has had the job's document, or been given up on. A
// job deleted meanwhile is left deleted.
func (s *scheduler) webhookDone(jobID string) {
	job, err := s.get(jobID)
	if err != nil {
		return
	}
	if c, ok := job.delivered(); ok {
		if err := s.store.commit(job, c); err != nil {
			s.log.Error("save that a job's webhooks were delivered", "job", jobID, "err", err)
		}
	}
}

// startWebhooks starts sending: first, again, the documents of ended jobs whose webhooks a
// stop cut short. It runs at start before the workers and the HTTP server, so no job can end
// meanwhile and be sent twice.
func (s *scheduler) startWebhooks(publicURL string) {
	if s.hooks == nil {
		return
	}
	s.mu.Lock()
	s.publicURL, s.hooksLive = publicURL, true
	jobs := append([]*Job(nil), s.order...)
	s.mu.Unlock()
	n := 0
	for _, job := range jobs {
		if rec := job.record(); rec.Status.Final() && rec.WebhookPending {
			s.hooks.deliver(rec.ID, webhookBody(rec, publicURL))
			n++
		}
	}
	if n > 0 {
		s.log.Info("sending again the webhooks of jobs that ended before charond stopped", "jobs", n)
	}
}

// minWebhookSecret is the shortest webhook secret accepted: like a token, a short key can be
// guessed, and then anyone can forge a delivery.
const minWebhookSecret = 16

// webhookSettings turns the webhook flags into the engine's configuration, reading the secret
// from its file if one is named. It returns a zero config when no -webhook is given.
func webhookSettings(cfg *config) (webhookConfig, error) {
	secret := cfg.WebhookSecret
	if cfg.WebhookSecretFile != "" {
		if err := checkSecretFile("-webhook-secret-file", cfg.WebhookSecretFile); err != nil {
			return webhookConfig{}, err
		}
		data, err := os.ReadFile(cfg.WebhookSecretFile)
		if err != nil {
			return webhookConfig{}, fmt.Errorf("-webhook-secret-file: %w", err)
		}
		secret = strings.TrimRight(string(data), "\r\n")
	}
	switch {
	case len(cfg.Webhooks) == 0 && secret != "":
		return webhookConfig{}, fmt.Errorf("-webhook-secret is set but no -webhook: give the URLs to deliver to")
	case len(cfg.Webhooks) == 0:
		return webhookConfig{}, nil
	case secret == "":
		return webhookConfig{}, fmt.Errorf("-webhook-secret: required with -webhook (or -webhook-secret-file): receivers check each delivery's signature with it")
	case len(secret) < minWebhookSecret:
		return webhookConfig{}, fmt.Errorf("-webhook-secret: %d bytes is too short to sign deliveries: use at least %d (openssl rand -hex 32 makes one)", len(secret), minWebhookSecret)
	}
	return webhookConfig{URLs: cfg.Webhooks, Secret: []byte(secret)}, nil
}

// checkPublicURL accepts an empty -public-url, or an absolute http or https URL with no query
// or fragment, since job paths are appended to it.
func checkPublicURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("-public-url %q: %v", raw, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return fmt.Errorf("-public-url %q: must be an absolute http:// or https:// URL", raw)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("-public-url %q: must have no query, fragment or user info: job paths are appended to it", raw)
	}
	return nil
}
