package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/api"
)

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens: named, admin or read-only, stored only as a hash",
	}
	addClientFlags(cmd)
	var role string
	create := &cobra.Command{
		Use:   "create NAME [--role admin|read-only]",
		Short: "Make a token and print it, this once, alone on stdout",
		Example: `  diskless token create grafana                  # read-only: GET requests and /metrics
  TOKEN=$(diskless token create ci --role admin)`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var tc api.TokenCreated
			if err := c.do(cmd.Context(), http.MethodPost, "/tokens", api.CreateTokenRequest{Name: args[0], Role: role}, &tc); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, tc)
			}
			// stdout holds the token alone, for $(...); what a person
			// reads goes to stderr.
			fmt.Fprintln(cmd.OutOrStdout(), tc.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s (%s) created\n", tc.Name, tc.Role)
			for _, n := range tc.Notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			return nil
		}),
	}
	create.Flags().StringVar(&role, "role", string(api.RoleReadOnly), "admin (everything) or read-only (GET requests and /metrics)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens: name, role, created, last used (never the tokens)",
		Args:  cobra.NoArgs,
		RunE: withClient(func(cmd *cobra.Command, c *client, _ []string) error {
			var toks []api.TokenInfo
			if err := c.do(cmd.Context(), http.MethodGet, "/tokens", nil, &toks); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, toks)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tLAST USED")
			for _, t := range toks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Role, utcTime(t.Created), utcTime(t.LastUsed))
			}
			return tw.Flush()
		}),
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: it stops working at once (the last admin token cannot be revoked)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var n api.Notes
			if err := c.do(cmd.Context(), http.MethodDelete, "/tokens/"+url.PathEscape(args[0]), nil, &n); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", args[0])
			for _, s := range n.Notes {
				fmt.Fprintln(cmd.OutOrStdout(), "note:", s)
			}
			return nil
		}),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newAuditCommand() *cobra.Command {
	var limit int
	var before uint64
	cmd := &cobra.Command{
		Use:   "audit [--limit N] [--before SEQ]",
		Short: "Show the audit log: who changed what, when, and how it ended (newest first)",
		Args:  cobra.NoArgs,
		RunE: withClient(func(cmd *cobra.Command, c *client, _ []string) error {
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if before > 0 {
				q.Set("before", strconv.FormatUint(before, 10))
			}
			var entries []api.AuditEntry
			if err := c.do(cmd.Context(), http.MethodGet, "/audit?"+q.Encode(), nil, &entries); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tWHO\tACTION\tOBJECT\tRESULT")
			for _, e := range entries {
				result := strconv.Itoa(e.Status)
				if e.Error != "" {
					result += " " + e.Error
				}
				if e.Job != "" {
					result += " job " + e.Job
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, utcTime(e.Time), e.Who, e.Action,
					orDash(e.Object), result)
			}
			return tw.Flush()
		}),
	}
	addClientFlags(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "entries to show (at most 1000)")
	cmd.Flags().Uint64Var(&before, "before", 0, "only entries older than this SEQ (the next page)")
	return cmd
}

// utcTime shows a time for a table, "-" when never.
func utcTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// localPrincipal is who the CLI acts as when it works on the data
// directory itself: the audit log says local:USER.
func localPrincipal() api.Principal {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = strconv.Itoa(os.Getuid())
	}
	return api.Principal{Name: "local:" + name, Role: api.RoleAdmin}
}
