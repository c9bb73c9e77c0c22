package msemu

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// Graph limits (reference §6).
const (
	// DefaultMaxGraphConcurrency is Graph's MailboxConcurrency limit:
	// concurrent requests per app and mailbox.
	DefaultMaxGraphConcurrency = 4
	// GraphMaxRequestBody is the largest request body Graph takes (4 MB).
	GraphMaxRequestBody = 4 << 20
	// GraphThrottleRetryAfter is the Retry-After, in seconds, of a 429
	// for the concurrency limit.
	GraphThrottleRetryAfter = 1
)

// Texts of Graph's errors, as Graph sends them.
const (
	graphAccessDenied = "Access is denied. Check credentials and try again."
	graphSendAsDenied = "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message."
	graphNoRecipients = "At least one recipient isn't valid., A message can't be sent because it contains no recipients."
	graphThrottled    = "Application is over its MailboxConcurrency limit."
	graphNotFound     = "The specified object was not found in the store."
	// graphAuthenticate is Graph's WWW-Authenticate on a 401.
	graphAuthenticate = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`
)

// GraphFault is a scripted Graph answer for FailNextGraph.
type GraphFault struct {
	// Status is the HTTP status; 0 aborts the request without an answer,
	// as a dropped connection or a timeout looks to the client.
	Status int
	// Code and Message go into the JSON error; Message defaults to a
	// generic text.
	Code, Message string
	// RetryAfter, in seconds, is sent as Retry-After when positive.
	RetryAfter int
}

// graphState is the Graph side's mutable state, guarded by Emulator.mu.
type graphState struct {
	connSeq         int
	activeByKey     map[string]int // app|mailbox → requests in progress
	activeByMailbox map[string]int
	fault           GraphFault
	faultN          int
	hold            *graphHold
	drafts          map[string]*draft
	uploads         map[string]*uploadSession // by authtoken
}

func newGraphState() graphState {
	return graphState{
		activeByKey:     map[string]int{},
		activeByMailbox: map[string]int{},
		drafts:          map[string]*draft{},
		uploads:         map[string]*uploadSession{},
	}
}

// graphHold parks requests for HoldGraph.
type graphHold struct {
	arrived  chan string
	released chan struct{}
	once     sync.Once
}

// graphCall is an authorized Graph request.
type graphCall struct {
	app     App
	mailbox string // as provisioned
	connID  int
}

type graphConnKey struct{}

// FailNextGraph answers the next n Graph requests, whatever they are
// (upload PUTs included), with f instead of serving them.
func (e *Emulator) FailNextGraph(n int, f GraphFault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.graph.fault, e.graph.faultN = f, n
}

// HoldGraph makes every Graph request that has passed authentication
// and holds a concurrency slot wait until release is called; each one
// first announces its mailbox on arrived. Tests use it to keep requests
// in flight without sleeping.
func (e *Emulator) HoldGraph() (arrived <-chan string, release func()) {
	h := &graphHold{arrived: make(chan string), released: make(chan struct{})}
	e.mu.Lock()
	e.graph.hold = h
	e.mu.Unlock()
	return h.arrived, func() {
		h.once.Do(func() { close(h.released) })
		e.mu.Lock()
		if e.graph.hold == h {
			e.graph.hold = nil
		}
		e.mu.Unlock()
	}
}

func (e *Emulator) graphHandler() http.Handler {
	mux := http.NewServeMux()
	const u = "/v1.0/users/{mailbox}"
	mux.HandleFunc("POST "+u+"/sendMail", e.graphAPI(RoleMailSend, e.handleSendMail))
	mux.HandleFunc("POST "+u+"/messages", e.graphAPI(RoleMailReadWrite, e.handleCreateDraft))
	mux.HandleFunc("POST "+u+"/messages/{id}/attachments", e.graphAPI(RoleMailReadWrite, e.handleAddAttachment))
	mux.HandleFunc("POST "+u+"/messages/{id}/attachments/createUploadSession", e.graphAPI(RoleMailReadWrite, e.handleCreateUploadSession))
	mux.HandleFunc("POST "+u+"/messages/{id}/send", e.graphAPI(RoleMailSend, e.handleSendDraft))
	mux.HandleFunc("DELETE "+u+"/messages/{id}", e.graphAPI(RoleMailReadWrite, e.handleDeleteDraft))
	mux.HandleFunc("PUT /api/v2.0/", e.handleUpload)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		e.graphError(w, r, http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+r.URL.Path+"'.")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newGUID()
		w.Header().Set("request-id", id)
		if c := r.Header.Get("client-request-id"); c != "" {
			w.Header().Set("client-request-id", c)
		}
		sw := &statusWriter{ResponseWriter: w}
		answered := false
		defer func() {
			status := sw.status
			if !answered {
				status = 0 // aborted
			} else if status == 0 {
				status = http.StatusOK
			}
			e.mu.Lock()
			e.stats.GraphStatuses[status]++
			e.mu.Unlock()
		}()
		e.mu.Lock()
		e.stats.GraphRequests++
		f, faulted := e.graph.fault, e.graph.faultN > 0
		if faulted {
			e.graph.faultN--
		}
		e.mu.Unlock()
		if faulted {
			e.writeGraphFault(sw, r, f)
		} else {
			mux.ServeHTTP(sw, r)
		}
		answered = true
	})
}

func (e *Emulator) writeGraphFault(w http.ResponseWriter, r *http.Request, f GraphFault) {
	e.log.Info("msemu graph scripted fault", "path", r.URL.Path, "status", f.Status, "code", f.Code)
	if f.Status == 0 {
		panic(http.ErrAbortHandler)
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
	}
	msg := f.Message
	if msg == "" {
		msg = "Scripted fault " + f.Code + "."
	}
	e.graphError(w, r, f.Status, f.Code, msg)
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// graphConnContext numbers the Graph server's connections, counting
// them for Stats.GraphConnections.
func (e *Emulator) graphConnContext(ctx context.Context, _ net.Conn) context.Context {
	e.mu.Lock()
	e.graph.connSeq++
	id := e.graph.connSeq
	e.stats.GraphConnections++
	e.mu.Unlock()
	return context.WithValue(ctx, graphConnKey{}, id)
}

// graphError writes Graph's JSON error body.
func (e *Emulator) graphError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", graphAuthenticate)
	}
	type inner struct {
		Date            string `json:"date"`
		RequestID       string `json:"request-id"`
		ClientRequestID string `json:"client-request-id"`
	}
	type body struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError inner  `json:"innerError"`
	}
	reqID := w.Header().Get("request-id")
	clientID := r.Header.Get("client-request-id")
	if clientID == "" {
		clientID = reqID
	}
	e.writeJSON(w, r, status, map[string]body{"error": {code, msg,
		inner{e.now().UTC().Format("2006-01-02T15:04:05"), reqID, clientID}}})
}

// graphAPI wraps a handler for /v1.0/users/{mailbox}/… with Graph's
// checks, in Graph's order: token, role, mailbox, access scope, then
// the MailboxConcurrency limit.
func (e *Emulator) graphAPI(role string, h func(http.ResponseWriter, *http.Request, *graphCall)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user := r.PathValue("mailbox")
		call, ok := e.graphAuthorize(w, r, user, role)
		if !ok {
			return
		}
		release, ok := e.graphSlot(w, r, call.app.ClientID, call.mailbox)
		if !ok {
			return
		}
		defer release()
		h(w, r, call)
	}
}

func (e *Emulator) graphAuthorize(w http.ResponseWriter, r *http.Request, user, role string) (*graphCall, bool) {
	e.countGraphMailbox(user)
	token, hasBearer := cutPrefixFold(r.Header.Get("Authorization"), "Bearer ")
	rec, claims, perr := e.presented(user, strings.TrimSpace(token))
	rec.ConnID, _ = r.Context().Value(graphConnKey{}).(int)

	e.mu.Lock()
	var app *App
	status, code, msg := func() (int, string, string) {
		const invalid = "InvalidAuthenticationToken"
		switch {
		case !hasBearer || strings.TrimSpace(token) == "":
			return 401, invalid, "Access token is empty."
		case errors.Is(perr, jwt.ErrTokenExpired):
			return 401, invalid, "Lifetime validation failed, the token is expired."
		case perr != nil:
			return 401, invalid, "Access token validation failure."
		case !e.isGraphAudience(claims.Aud):
			return 401, invalid, "Access token validation failure. Invalid audience."
		}
		var ok bool
		if app, ok = e.tokenAppLocked(claims); !ok {
			return 401, invalid, "Access token validation failure."
		}
		if !contains(claims.Roles, role) {
			return 403, "ErrorAccessDenied", graphAccessDenied
		}
		mb, ok := e.mailboxes[strings.ToLower(user)]
		if !ok {
			return 404, "ErrorInvalidUser", "The requested user '" + user + "' is invalid."
		}
		if mb.Unlicensed {
			return 404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
		}
		if len(app.ScopedMailboxes) > 0 && !contains(app.ScopedMailboxes, mb.Address) {
			return 403, "ErrorAccessDenied", graphAccessDenied
		}
		user = mb.Address
		return 0, "", ""
	}()
	rec.OK = status == 0
	if !rec.OK {
		rec.Reply = strconv.Itoa(status) + " " + code
	}
	e.stats.GraphTokens = append(e.stats.GraphTokens, rec)
	var call *graphCall
	if rec.OK {
		call = &graphCall{app: *app, mailbox: user, connID: rec.ConnID}
	}
	e.mu.Unlock()
	if !rec.OK {
		e.log.Info("msemu graph refused", "path", r.URL.Path, "mailbox", user, "app", rec.AppID, "status", status, "code", code)
		e.graphError(w, r, status, code, msg)
		return nil, false
	}
	return call, true
}

func (e *Emulator) isGraphAudience(aud string) bool {
	return graphAudiences[aud] || (e.graphLn != nil && slices.Contains(e.graphURLs(), aud))
}

// graphURLs are the emulated Graph's own resource URLs: GraphURL() and
// the same port under each of Options.Hostnames.
func (e *Emulator) graphURLs() []string {
	if e.graphLn == nil {
		return nil
	}
	urls := []string{e.GraphURL()}
	_, port, _ := net.SplitHostPort(e.graphLn.Addr().String())
	for _, h := range e.opts.Hostnames {
		urls = append(urls, "https://"+net.JoinHostPort(h, port))
	}
	return urls
}

// graphResourceOf is the emulated Graph's URL that scope asks a token
// for, or GraphURL() when it names none.
func (e *Emulator) graphResourceOf(scope string) string {
	for _, u := range e.graphURLs() {
		for _, s := range strings.Fields(scope) {
			if strings.EqualFold(s, u+"/.default") {
				return u
			}
		}
	}
	return e.GraphURL()
}

func (e *Emulator) countGraphMailbox(mailbox string) {
	e.mu.Lock()
	e.stats.GraphRequestsByMailbox[strings.ToLower(mailbox)]++
	e.mu.Unlock()
}

// graphSlot takes one of the app's concurrent request slots on mailbox,
// answering 429 when none is free, and then waits while HoldGraph holds.
func (e *Emulator) graphSlot(w http.ResponseWriter, r *http.Request, appID, mailbox string) (release func(), ok bool) {
	mbKey := strings.ToLower(mailbox)
	key := strings.ToLower(appID) + "|" + mbKey
	e.mu.Lock()
	if max := e.opts.MaxGraphConcurrency; max >= 0 && e.graph.activeByKey[key] >= max {
		e.mu.Unlock()
		e.log.Info("msemu graph throttled", "mailbox", mailbox, "app", appID)
		w.Header().Set("Retry-After", strconv.Itoa(GraphThrottleRetryAfter))
		e.graphError(w, r, http.StatusTooManyRequests, "ApplicationThrottled", graphThrottled)
		return nil, false
	}
	e.graph.activeByKey[key]++
	e.graph.activeByMailbox[mbKey]++
	if n := e.graph.activeByMailbox[mbKey]; n > e.stats.MaxConcurrentGraphByMailbox[mbKey] {
		e.stats.MaxConcurrentGraphByMailbox[mbKey] = n
	}
	h := e.graph.hold
	e.mu.Unlock()
	release = func() {
		e.mu.Lock()
		e.graph.activeByKey[key]--
		e.graph.activeByMailbox[mbKey]--
		e.mu.Unlock()
	}
	if h != nil {
		select {
		case h.arrived <- mailbox:
		case <-h.released:
		case <-r.Context().Done():
		}
		select {
		case <-h.released:
		case <-r.Context().Done():
		}
	}
	return release, true
}
