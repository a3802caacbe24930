package app

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"

	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/inventory"
)

// liveKeys are the top-level keys a reload applies while the server runs:
// declarations of images and hosts go through the inventory, which the
// supervisor serves live (a running host's session is never dropped; a
// change the host's state does not allow now is refused and logged, as at
// a start). Every other key is bound into a socket, a server or the state
// store at start, and a reload reports its change instead of applying it.
var liveKeys = map[string]bool{"hosts": true, "images": true}

// reloader re-reads the configuration file of a running server (SIGHUP,
// `systemctl reload`). It is used by one goroutine.
type reloader struct {
	file    string         // "" when the configuration came from flags
	started *config.Config // as loaded at start, before ResolveNetwork filled in the interface's defaults
	site    *Site
	log     *slog.Logger
}

// serve waits for ctx, re-reading the configuration at each request, and
// calls done (if set) with each reload's outcome.
func (r *reloader) serve(ctx context.Context, requests <-chan struct{}, done func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-requests:
			err := r.reload(ctx)
			if done != nil {
				done(err)
			}
		}
	}
}

// reload reads the file again and applies what can change live. A file
// that does not load changes nothing: the running configuration stays.
// Keys that cannot change live are logged, one warning each, at every
// reload until a restart applies them.
func (r *reloader) reload(ctx context.Context) error {
	if r.file == "" {
		err := fmt.Errorf("the configuration came from command-line flags: there is no file to re-read; restart to change it")
		r.log.Warn("configuration not reloaded", "err", err)
		return err
	}
	r.log.Info("reloading the configuration", "file", r.file)
	next, err := config.Load(r.file)
	if err != nil {
		r.log.Error("configuration not reloaded: the file does not load, the running configuration stays", "file", r.file, "err", err)
		return err
	}
	restart := restartOnly(r.started, next)
	for _, key := range restart {
		r.log.Warn("not applied until restart: "+key, "key", key, "file", r.file)
	}
	r.unappliedImages(next)
	secrets, err := declare(ctx, r.site, next, r.log)
	if err != nil {
		// declare stops at the first host it cannot take: those before
		// it are applied.
		r.log.Error("configuration partly reloaded: the hosts and images before this one are applied", "file", r.file, "err", err)
		return err
	}
	logSecrets(r.log, secrets)
	r.log.Info("configuration reloaded", "file", r.file, "not_applied_until_restart", len(restart))
	return nil
}

// unappliedImages warns about images whose declaration changed although
// they exist: a declaration only creates an image (as at a start), its
// versions are the CLI's and the API's.
func (r *reloader) unappliedImages(next *config.Config) {
	before := map[string]config.Image{}
	for _, im := range r.started.Images {
		before[im.Name] = im
	}
	for _, im := range next.Images {
		old, declared := before[im.Name]
		if !declared || old == im {
			continue
		}
		if _, err := r.site.Inv.Image(im.Name); inventory.KindOf(err) == inventory.NotFound {
			continue // created now
		}
		r.log.Warn("declared image exists: a declaration only creates an image, its change is not applied (diskless image ... changes it)",
			"image", im.Name, "file", r.file)
	}
}

// restartOnly lists the keys whose value differs between the two
// configurations, other than liveKeys, as dotted paths ("dhcp.range").
// It walks the yaml tags, so a key added to config.Config is reported
// from the start rather than silently ignored.
func restartOnly(old, next *config.Config) []string {
	var keys []string
	var walk func(a, b reflect.Value, path string)
	walk = func(a, b reflect.Value, path string) {
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			key := name
			if path != "" {
				key = path + "." + name
			} else if liveKeys[name] {
				continue
			}
			fa, fb := a.Field(i), b.Field(i)
			if f.Type.Kind() == reflect.Struct {
				walk(fa, fb, key)
			} else if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
				keys = append(keys, key)
			}
		}
	}
	walk(reflect.ValueOf(old).Elem(), reflect.ValueOf(next).Elem(), "")
	return keys
}

// logSecrets says which credentials were generated, never the secrets:
// the log and stdout end in the journal. The CLI shows them from the
// store on demand.
func logSecrets(log *slog.Logger, secrets []NewSecret) {
	for _, s := range secrets {
		log.Info("CHAP credentials generated; `diskless host show HOST --secrets` prints them",
			"host", s.Host, "mac", s.MAC, "key", s.Key, "user", s.User)
	}
}
