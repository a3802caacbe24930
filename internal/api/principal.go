package api

import "context"

// Principal is who a request acts as: a token's name and role, or, in the
// CLI's in-process handler, the local user ("local:alice"). The audit log
// records its Name.
//
// The seam for another front end on the same API (the web console): it
// finds the token its own way (a session cookie), turns it into a
// Principal with Handler.AuthenticateToken, and serves its actions
// through Handler.ServeHTTP with the principal in the request's context:
//
//	p, err := apiHandler.AuthenticateToken(cookie.Value)
//	if err != nil { /* back to the login page */ }
//	ctx := api.WithPrincipal(r.Context(), p)
//	req, _ := http.NewRequestWithContext(ctx, "POST", api.Prefix+"/hosts/lab-01/reset", nil)
//	req.RemoteAddr = r.RemoteAddr // the audit log records it
//	apiHandler.ServeHTTP(w, req) // or a recorder, to render the answer
//
// The API then checks the role and audits the change under p.Name, as if
// the token had come in an Authorization header.
type Principal struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p. Handler.ServeHTTP trusts a
// principal in the request's context without looking at the request's
// headers: only code in this process can put one there, and it must have
// authenticated it first (AuthenticateToken).
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal ctx carries. Inside the API's
// handlers every request has one.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
