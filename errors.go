package main

import (
	"errors"
	"fmt"
	"net/http"
)

// errorKind classifies an error for the HTTP layer, which maps each kind to one status.
type errorKind int

const (
	errInternal     errorKind = iota // a fault of charond's: logged, and answered generically
	errInvalid                       // 400: the request is malformed or a field is wrong
	errNotFound                      // 404
	errConflict                      // 409: the job is not in a state that allows this
	errTooLarge                      // 413
	errUnsupported                   // 415
	errUnavailable                   // 503: shutting down, or too many streams
	errNotAllowed                    // 405
	errUnauthorized                  // 401: no valid bearer token
	errTooMany                       // 429: the queue is full
	errForbidden                     // 403: refused by policy (a cross-site page, -playbooks-only)
	errMisdirected                   // 421: the Host header names a host charond does not answer for
	errTimeout                       // 408: the request body did not arrive in time
)

// apiError is an error whose message is written for the client.
type apiError struct {
	kind errorKind
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &apiError{kind: errInvalid, msg: fmt.Sprintf(format, args...)}
}

func apiErrorf(kind errorKind, format string, args ...any) error {
	return &apiError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// errJobNotFound is the one answer for an unknown job id on every route.
func errJobNotFound(id string) error {
	return apiErrorf(errNotFound, "job not found: %s", id)
}

// httpStatus maps an error to its status code and the message the client may see.
func httpStatus(err error) (int, string) {
	var ae *apiError
	if !errors.As(err, &ae) {
		return http.StatusInternalServerError, "internal error"
	}
	switch ae.kind {
	case errInvalid:
		return http.StatusBadRequest, ae.msg
	case errNotFound:
		return http.StatusNotFound, ae.msg
	case errConflict:
		return http.StatusConflict, ae.msg
	case errTooLarge:
		return http.StatusRequestEntityTooLarge, ae.msg
	case errUnsupported:
		return http.StatusUnsupportedMediaType, ae.msg
	case errUnavailable:
		return http.StatusServiceUnavailable, ae.msg
	case errNotAllowed:
		return http.StatusMethodNotAllowed, ae.msg
	case errUnauthorized:
		return http.StatusUnauthorized, ae.msg
	case errTooMany:
		return http.StatusTooManyRequests, ae.msg
	case errForbidden:
		return http.StatusForbidden, ae.msg
	case errMisdirected:
		return http.StatusMisdirectedRequest, ae.msg
	case errTimeout:
		return http.StatusRequestTimeout, ae.msg
	}
	return http.StatusInternalServerError, "internal error"
}
