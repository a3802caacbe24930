package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/app"
	"github.com/diskless-boot/diskless/internal/config"
)

// client is how the CLI reaches the API: a running server's over HTTP
// (found through data_dir/server.json, or --server), or, when no server
// runs, the same API handler in this process on the data directory. Both
// go through the same requests, so every command behaves the same either
// way.
type client struct {
	http  *http.Client
	base  string
	token string
	site  *app.Site // in process only
	local *api.Handler
}

// addClientFlags adds the flags every command that talks to the API has.
func addClientFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.String("data-dir", config.DefaultDataDir, "the server's data directory (state store, images, host disks)")
	f.String("server", "", "API base URL of a diskless server (default: the one running on data-dir, else work on data-dir directly)")
	f.String("token", "", "API token (default: data-dir/api-token; env DISKLESS_TOKEN)")
	f.Bool("json", false, "print JSON (read commands)")
}

func newClient(cmd *cobra.Command) (*client, error) {
	dir, _ := cmd.Flags().GetString("data-dir")
	server, _ := cmd.Flags().GetString("server")
	token, _ := cmd.Flags().GetString("token")
	if token == "" {
		token = os.Getenv("DISKLESS_TOKEN")
	}
	if server == "" {
		if b, err := os.ReadFile(filepath.Join(dir, app.ServerFile)); err == nil {
			var rec app.ServerRecord
			if json.Unmarshal(b, &rec) == nil && rec.API != "" && alive(rec.PID) {
				server = rec.API
			}
		}
	}
	if server != "" {
		if token == "" {
			t, err := api.ReadTokenFile(dir)
			if err != nil {
				return nil, fmt.Errorf("no API token: give --token or DISKLESS_TOKEN (%v)", err)
			}
			token = t
		}
		return &client{http: &http.Client{Timeout: 10 * time.Minute}, base: strings.TrimRight(server, "/"), token: token}, nil
	}
	site, err := app.OpenSite(cmd.Context(), dir, app.SiteOptions{})
	if err != nil {
		return nil, err
	}
	h, err := api.New(api.Config{Inventory: site.Inv, NoAuth: true, Principal: localPrincipal(), Context: cmd.Context(),
		Import: app.OpenImport, Inspect: app.InspectImport, Export: app.ExportImage})
	if err != nil {
		site.Close()
		return nil, err
	}
	return &client{http: &http.Client{Transport: handlerTransport{h}}, base: "http://local", site: site, local: h}, nil
}

// alive reports whether a process exists (server.json of a server that
// was killed stays behind).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	p, err := os.FindProcess(pid)
	return err == nil && p.Signal(syscallZero) == nil
}

// Close waits for in-process jobs and releases the data directory.
func (c *client) Close() error {
	if c.site != nil {
		return c.site.Close()
	}
	return nil
}

// handlerTransport sends requests to an in-process handler.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// apiError is an error answer of the API.
type apiError struct {
	Status int
	Body   api.Error
}

func (e *apiError) Error() string {
	if e.Body.Field != "" {
		return fmt.Sprintf("%s: %s", e.Body.Field, e.Body.Error)
	}
	return e.Body.Error
}

// do sends a request with a JSON body (nil: none) and decodes the JSON
// answer into out (nil: ignored).
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+api.Prefix+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("API %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.Body) != nil || e.Body.Error == "" {
			e.Body.Error = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
		}
		return e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("API answer: %w", err)
		}
	}
	return nil
}

// wait follows a job to its end, with a progress bar on stderr.
func (c *client) wait(ctx context.Context, job api.Job, what string) (api.Job, error) {
	bar := newProgressBar(os.Stderr, what)
	for {
		if job.State != api.JobRunning {
			bar.finish(job)
			switch job.State {
			case api.JobDone:
				return job, nil
			default:
				return job, fmt.Errorf("%s %s: %s", what, job.State, job.Error)
			}
		}
		bar.update(job)
		select {
		case <-ctx.Done():
			// Ctrl-C: cancel the job on the server too.
			c.do(context.Background(), http.MethodDelete, "/jobs/"+job.ID, nil, nil)
			bar.finish(job)
			return job, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		var j api.Job
		if err := c.do(ctx, http.MethodGet, "/jobs/"+job.ID, nil, &j); err != nil {
			if errors.Is(err, context.Canceled) {
				continue
			}
			return job, err
		}
		job = j
	}
}

// printJSON prints v indented on stdout.
func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func jsonFlag(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}
