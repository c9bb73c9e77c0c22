package queue

import (
	"io"
)

// readBody returns the body of id as Body serves it.
func readBody(s *Spool, id string) ([]byte, error) {
	r, n, err := s.Body(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err == nil && int64(len(b)) != n {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}
