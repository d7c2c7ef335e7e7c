package httpapi

import (
	"context"
	"net/http"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/auth"
)

// Tokens verifies the bearer token of a request (auth.TokenVerifier).
type Tokens interface {
	VerifyBearer(header string) (auth.Claims, error)
}

type claimsKey struct{}

// open paths answer without a token: probes and scrapers.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// requireToken wraps next: every request but the open paths carries a
// valid bearer token (401 otherwise, with nothing about why beyond the
// log). The claims travel in the request's context for allowed.
func requireToken(tokens Tokens, log *zap.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		claims, err := tokens.VerifyBearer(r.Header.Get("Authorization"))
		if err != nil {
			log.Info("HTTP request refused: bad or missing bearer token", zap.String("method", r.Method),
				zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr), zap.Error(err))
			w.Header().Set("WWW-Authenticate", `Bearer realm="safekeeper"`)
			writeError(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

// allowed reports whether the request's token grants tenant ("" = every
// tenant: scope safekeeperdata), answering 403 when it does not. Without
// token checking everything is allowed. The answer is the same whether
// or not the tenant's timelines exist.
func allowed(w http.ResponseWriter, r *http.Request, tenant string) bool {
	claims, ok := r.Context().Value(claimsKey{}).(auth.Claims)
	if !ok {
		return true
	}
	var err error
	if tenant == "" {
		if claims.Scope != auth.ScopeSafekeeperData {
			err = auth.ErrNotAllowed
		}
	} else {
		err = claims.Allows(tenant)
	}
	if err != nil {
		writeError(w, http.StatusForbidden, "permission denied")
		return false
	}
	return true
}
