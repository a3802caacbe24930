package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"
)

// Job states.
const (
	JobRunning  = "running"
	JobDone     = "done"
	JobFailed   = "failed"
	JobCanceled = "canceled"
)

// maxFinishedJobs bounds the finished jobs kept for clients to read.
const maxFinishedJobs = 64

// Job is a long operation (import, export, promote) a client polls:
// GET /api/v1/jobs/{id}.
type Job struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`   // "import", "export", "promote", "create"
	Object   string    `json:"object"` // what it works on, e.g. "image debian12"
	State    string    `json:"state"`
	Done     int64     `json:"done_bytes"`
	Total    int64     `json:"total_bytes"`
	Rate     float64   `json:"bytes_per_second"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Error    string    `json:"error,omitempty"`
	// Result is what the operation made (a version, a promote's notes).
	Result any `json:"result,omitempty"`
}

// jobs runs and remembers jobs. Safe for concurrent use.
type jobs struct {
	mu   sync.Mutex
	m    map[string]*jobState
	base context.Context
}

type jobState struct {
	job    Job
	cancel context.CancelFunc
	done   chan struct{}
	// Rate over a sliding window: the progress of about a second ago.
	markAt   time.Time
	markDone int64
}

func newJobs(ctx context.Context) *jobs {
	return &jobs{m: map[string]*jobState{}, base: ctx}
}

// start runs fn as a job; fn reports progress with the given function and
// returns its result.
func (js *jobs) start(kind, object string, total int64, fn func(ctx context.Context, progress func(done int64)) (any, error)) Job {
	var idb [8]byte
	rand.Read(idb[:])
	ctx, cancel := context.WithCancel(js.base)
	s := &jobState{job: Job{ID: hex.EncodeToString(idb[:]), Kind: kind, Object: object, State: JobRunning,
		Total: total, Started: time.Now().UTC()}, cancel: cancel, done: make(chan struct{})}
	s.markAt = s.job.Started
	js.mu.Lock()
	js.m[s.job.ID] = s
	js.pruneLocked()
	j := s.job
	js.mu.Unlock()
	go func() {
		defer close(s.done)
		defer cancel()
		res, err := fn(ctx, func(done int64) { js.progress(s, done) })
		js.mu.Lock()
		defer js.mu.Unlock()
		s.job.Finished = time.Now().UTC()
		switch {
		case err != nil && ctx.Err() != nil:
			s.job.State, s.job.Error = JobCanceled, err.Error()
		case err != nil:
			s.job.State, s.job.Error = JobFailed, err.Error()
		default:
			s.job.State, s.job.Result = JobDone, res
			if s.job.Total > 0 {
				s.job.Done = s.job.Total
			}
		}
		if d := s.job.Finished.Sub(s.job.Started).Seconds(); d > 0 {
			s.job.Rate = float64(s.job.Done) / d
		}
	}()
	return j
}

func (js *jobs) progress(s *jobState, done int64) {
	now := time.Now()
	js.mu.Lock()
	defer js.mu.Unlock()
	s.job.Done = done
	if dt := now.Sub(s.markAt); dt >= time.Second {
		s.job.Rate = float64(done-s.markDone) / dt.Seconds()
		s.markAt, s.markDone = now, done
	} else if s.job.Rate == 0 && dt > 0 && s.markDone == 0 {
		s.job.Rate = float64(done) / now.Sub(s.job.Started).Seconds()
	}
}

// pruneLocked forgets the oldest finished jobs beyond the bound.
func (js *jobs) pruneLocked() {
	var finished []*jobState
	for _, s := range js.m {
		if s.job.State != JobRunning {
			finished = append(finished, s)
		}
	}
	if len(finished) <= maxFinishedJobs {
		return
	}
	sort.Slice(finished, func(i, j int) bool { return finished[i].job.Finished.Before(finished[j].job.Finished) })
	for _, s := range finished[:len(finished)-maxFinishedJobs] {
		delete(js.m, s.job.ID)
	}
}

func (js *jobs) get(id string) (Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	s, ok := js.m[id]
	if !ok {
		return Job{}, false
	}
	return s.job, true
}

func (js *jobs) list() []Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	out := make([]Job, 0, len(js.m))
	for _, s := range js.m {
		out = append(out, s.job)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

func (js *jobs) cancel(id string) bool {
	js.mu.Lock()
	defer js.mu.Unlock()
	s, ok := js.m[id]
	if ok {
		s.cancel()
	}
	return ok
}

// wait blocks until the job ends or ctx is done.
func (js *jobs) wait(ctx context.Context, id string) {
	js.mu.Lock()
	s, ok := js.m[id]
	js.mu.Unlock()
	if !ok {
		return
	}
	select {
	case <-s.done:
	case <-ctx.Done():
	}
}
