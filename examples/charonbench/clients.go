package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// This file opens many streams at once and waits for their readers.

// connectStreams opens n streams of path on addr, at most conc connecting at a time, and reads
// each up to its `connected` event, by which point the server has registered it. It returns
// the streams in order (nil where one failed), how many failed, and the first error.
func connectStreams(ctx context.Context, n int, addr, path string, deadline time.Time, conc int) ([]*rawStream, int, error) {
	streams := make([]*rawStream, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // guards failed and firstErr
		failed   int
		firstErr error
	)
	sem := make(chan struct{}, max(conc, 1))
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			// Ends once stream i is connected or has failed; connectStreams waits for it.
			defer wg.Done()
			defer func() { <-sem }()
			s, err := openStream(ctx, addr, path, deadline)
			if err == nil {
				err = s.awaitConnected()
			}
			if err != nil {
				if s != nil {
					s.conn.Close()
				}
				mu.Lock()
				failed++
				if firstErr == nil {
					firstErr = fmt.Errorf("stream %d: %w", i, err)
				}
				mu.Unlock()
				return
			}
			streams[i] = s
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		closeStreams(streams)
		return nil, n, err
	}
	return streams, failed, firstErr
}

// awaitConnected reads up to the stream's `connected` event.
func (s *rawStream) awaitConnected() error {
	for range 10 {
		ev, err := s.sse.next()
		if err != nil {
			return err
		}
		if ev.Event == "connected" {
			return nil
		}
	}
	return errors.New("no `connected` event among the first 10")
}

func closeStreams(streams []*rawStream) {
	for _, s := range streams {
		if s != nil {
			s.conn.Close()
		}
	}
}

// waitReaders waits for wg until timeout; then it closes the streams, which ends every read
// at once, and waits again. It reports whether the readers finished on their own.
func waitReaders(wg *sync.WaitGroup, timeout time.Duration, streams ...[]*rawStream) bool {
	done := make(chan struct{})
	go func() {
		// Ends when every reader has returned, which closing the streams guarantees.
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
	}
	for _, ss := range streams {
		closeStreams(ss)
	}
	<-done
	return false
}
