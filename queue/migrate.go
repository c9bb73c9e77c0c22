package queue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The previous spool format (oauthrelay up to 7dfc8da) kept two files per
// message: the body in messages/<id>.eml and the envelope in
// <state>/<id>.json. Recovery converts such a spool in place, message by
// message, into message files; a corrupt/<id>.json stays as it is (with
// its body in messages/) for a person to inspect.

func (s *Spool) v1EnvPath(st State, id string) string {
	return filepath.Join(s.dir, string(st), id+".json")
}

// isV1Corrupt says whether id is a corrupt message of the previous
// format (an envelope in corrupt/ and its body in messages/).
func (s *Spool) isV1Corrupt(id string) bool {
	_, err := os.Lstat(s.v1EnvPath(Corrupt, id))
	return err == nil
}

func (s *Spool) v1BodyPath(id string) string {
	return filepath.Join(s.dir, msgDir, id+".eml")
}

// openV1Body opens the body of a corrupt message of the previous format:
// the whole file is the body, with no header to skip as openBody does.
func (s *Spool) openV1Body(id string) (io.ReadCloser, int64, error) {
	f, err := openRead(s.v1BodyPath(id))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// loadV1Corrupt reads a corrupt envelope of the previous format, whose
// reading fails in most cases: that is why it is there.
func (s *Spool) loadV1Corrupt(id string) (*Envelope, error) {
	b, err := os.ReadFile(s.v1EnvPath(Corrupt, id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	e, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("envelope %s/%s.json: %w", Corrupt, id, err)
	}
	e.State = Corrupt
	return e, nil
}

// v1Message is one message of the previous format being migrated.
type v1Message struct {
	st  State
	id  string
	tmp string
}

// migrateV1 converts the previous format's messages into message files.
// It writes every new file under a name recovery removes (.migrating in
// tmp/), syncs once, renames them into their states, syncs once, and only
// then removes the old files: a crash at any point leaves every message
// whole in one of the two formats, and the next start finishes the job.
func (s *Spool) migrateV1(rep *RecoveryReport) error {
	var todo []v1Message
	for _, st := range States {
		if st == Corrupt {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.dir, string(st)))
		if err != nil {
			return err
		}
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok || !ValidID(id) {
				continue
			}
			if _, err := os.Lstat(s.msgPath(st, id)); err == nil {
				// Converted before a crash; only the old files are left
				// to remove.
				todo = append(todo, v1Message{st: st, id: id})
				continue
			}
			tmp := filepath.Join(s.dir, tmpDir, id+".migrating")
			if err := s.convertV1(st, id, tmp); err != nil {
				var bad *badV1
				if !errors.As(err, &bad) {
					// The spool cannot be written (a full disk): the
					// message is fine, and stays as it is.
					os.Remove(tmp)
					return fmt.Errorf("spool %s: converting message %s to the current format: %w", s.dir, id, err)
				}
				s.log.Error("spool: unreadable envelope of the previous spool format moved to corrupt/ for a person to inspect", "id", id, "state", st, "error", err.Error(),
					"fix", "inspect "+s.v1EnvPath(Corrupt, id)+" and its body "+s.v1BodyPath(id)+"; or delete it with `oauthrelay queue delete "+id+"`")
				os.Remove(tmp)
				if err := os.Rename(s.v1EnvPath(st, id), s.v1EnvPath(Corrupt, id)); err != nil {
					return err
				}
				rep.Corrupt = append(rep.Corrupt, id)
				continue
			}
			todo = append(todo, v1Message{st: st, id: id, tmp: tmp})
		}
	}
	if len(todo) == 0 {
		return nil
	}
	all := append(s.stateDirs(), filepath.Join(s.dir, tmpDir), filepath.Join(s.dir, msgDir))
	if err := s.durable(all...); err != nil {
		return err
	}
	for _, m := range todo {
		if m.tmp == "" {
			continue
		}
		if err := os.Rename(m.tmp, s.msgPath(m.st, m.id)); err != nil {
			return err
		}
	}
	if err := s.durable(all...); err != nil {
		return err
	}
	for _, m := range todo {
		os.Remove(s.v1EnvPath(m.st, m.id))
		os.Remove(s.v1BodyPath(m.id))
	}
	rep.Migrated = len(todo)
	s.log.Info("spool: converted messages of the previous spool format (two files each) into one file each", "messages", len(todo))
	return s.durable(all...)
}

// convertV1 writes the message file for the previous format's id in st to
// tmp, made durable by the caller.
func (s *Spool) convertV1(st State, id, tmp string) error {
	b, err := os.ReadFile(s.v1EnvPath(st, id))
	if err != nil {
		return err
	}
	env, err := Decode(b)
	if err != nil {
		return &badV1{err}
	}
	if env.ID != id {
		return &badV1{fmt.Errorf("the envelope is for message %s", env.ID)}
	}
	body, err := os.Open(s.v1BodyPath(id))
	if err != nil {
		return &badV1{fmt.Errorf("its message body: %w", err)}
	}
	defer body.Close()
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := &crcWriter{w: f}
	n, err := io.Copy(w, body)
	if err == nil && n != env.Size {
		err = &badV1{fmt.Errorf("its message body has %d bytes, the envelope says %d", n, env.Size)}
	}
	if err == nil {
		var js []byte
		if js, err = Encode(env); err == nil {
			_, err = f.Write(appendTrailer(nil, js, n, w.crc))
		}
	}
	if err == nil && !s.grouped() {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// crcWriter writes through to w, keeping the checksum of what it wrote.
type crcWriter struct {
	w   io.Writer
	crc uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc = crc32Update(c.crc, p[:n])
	return n, err
}

// badV1 is a message of the previous format that cannot be converted
// because it is damaged (not because the spool cannot be written).
type badV1 struct{ error }

func (b *badV1) Unwrap() error { return b.error }
