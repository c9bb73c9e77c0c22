package transport

import (
	"errors"
	"fmt"
)

// StageError remembers where in a conversation with Microsoft an error
// happened, so Classify can read the reply in its context.
type StageError struct {
	Stage Stage
	Err   error
}

func (e *StageError) Error() string { return fmt.Sprintf("%s: %v", e.Stage, e.Err) }
func (e *StageError) Unwrap() error { return e.Err }

// AtStage wraps err with the stage it happened at.
func AtStage(stage Stage, err error) error { return &StageError{Stage: stage, Err: err} }

// SplitStage returns where err happened and the error itself; an error
// that carries no stage is taken to have happened at def.
func SplitStage(err error, def Stage) (Stage, error) {
	var se *StageError
	if errors.As(err, &se) {
		return se.Stage, se.Err
	}
	return def, err
}

// ClassifyAt classifies err at the stage it carries (def if none).
func ClassifyAt(err error, def Stage, mailbox string) Verdict {
	stage, err := SplitStage(err, def)
	return Classify(stage, err, mailbox)
}
