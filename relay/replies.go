package relay

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/queue"
)

// reply builds the bare *smtp.SMTPError go-smtp needs: it type-asserts
// rather than using errors.As, so a wrapped error would lose its code and
// become a permanent 554 showing internal text.
func reply(code int, class, subject, detail int, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subject, detail}, Message: fmt.Sprintf(format, args...)}
}

// Refusal reasons, used in logs and the refused-messages metric.
const (
	ReasonAuthFailed    = "auth_failed"
	ReasonAuthLocked    = "auth_locked"
	ReasonAuthRequired  = "auth_required"
	ReasonTLSRequired   = "tls_required"
	ReasonSenderDenied  = "sender_denied"
	ReasonFromDenied    = "from_denied"
	ReasonBadHeader     = "bad_header"
	ReasonTooLarge      = "too_large"
	ReasonTooManyRcpts  = "too_many_recipients"
	ReasonSpoolError    = "spool_error"
	ReasonBadRecipient  = "bad_recipient"
	ReasonConnLimit     = "connection_limit"
	ReasonClientTimeout = "timeout"
)

// spoolFailure converts any failure to queue a message into the one reply a
// client should see: temporary, with the queue id so an admin can find the
// log line, and without internal error text.
func spoolFailure(log *slog.Logger, id string, err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		// Already a reply (size limit, policy, client timeout): keep it,
		// unwrapped.
		return &smtp.SMTPError{Code: se.Code, EnhancedCode: se.EnhancedCode, Message: se.Message}
	}
	if queue.IsFull(err) {
		log.Error("cannot queue message: the spool's disk is full", "id", id, "error", err.Error(),
			"fix", "free space on the spool's filesystem (df -h); the client was told to retry")
		return reply(451, 4, 3, 0, "Message not queued (id %s): the relay's disk is full. Nothing was accepted; please try again later", id)
	}
	log.Error("cannot queue message: spool write failed", "id", id, "error", err.Error(),
		"fix", "check the spool directory's permissions and filesystem; the client was told to retry")
	return reply(451, 4, 3, 0, "Message not queued (id %s): the relay could not write it to disk. Nothing was accepted; please try again later", id)
}
