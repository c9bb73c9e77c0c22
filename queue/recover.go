package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RecoveryReport says what Open found after a crash.
type RecoveryReport struct {
	RemovedPartial int      // half-written files never acknowledged
	Requeued       []string // interrupted deliveries put back in incoming/
	Corrupt        []string // envelopes moved to corrupt/
}

// recover puts the spool back into a consistent state after a crash.
func (s *Spool) recover(rep *RecoveryReport) error {
	tmp := filepath.Join(s.dir, tmpDir)
	for _, d := range s.partialDirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			if os.Remove(filepath.Join(d, e.Name())) == nil {
				rep.RemovedPartial++
			}
		}
	}
	known := map[string]bool{}
	for _, st := range States {
		ids, err := s.IDs(st)
		if err != nil {
			return err
		}
		for _, id := range ids {
			known[id] = true
			if st == Corrupt {
				continue
			}
			e, lerr := s.Load(st, id)
			if lerr == nil {
				if fi, serr := os.Stat(s.BodyPath(id)); serr != nil {
					lerr = fmt.Errorf("its message body %s is missing", s.BodyPath(id))
				} else if fi.Size() != e.Size {
					lerr = fmt.Errorf("its message body has %d bytes, the envelope says %d", fi.Size(), e.Size)
				}
			}
			if lerr != nil {
				s.log.Error("spool: unreadable envelope moved to corrupt/ for a person to inspect", "id", id, "state", st, "error", lerr.Error(),
					"fix", "inspect "+filepath.Join(s.dir, string(Corrupt), id+".json")+"; fix it and move it to incoming/, or delete it")
				if err := os.Rename(s.envPath(st, id), s.envPath(Corrupt, id)); err != nil {
					return err
				}
				rep.Corrupt = append(rep.Corrupt, id)
				continue
			}
			if st == Active {
				if err := s.Move(e, Incoming); err != nil {
					return err
				}
				rep.Requeued = append(rep.Requeued, id)
			}
		}
	}
	bodies, err := os.ReadDir(filepath.Join(s.dir, msgDir))
	if err != nil {
		return err
	}
	for _, b := range bodies {
		id, ok := strings.CutSuffix(b.Name(), ".eml")
		if !ok || !known[id] {
			if os.Remove(filepath.Join(s.dir, msgDir, b.Name())) == nil {
				rep.RemovedPartial++
			}
		}
	}
	if rep.RemovedPartial > 0 || len(rep.Requeued) > 0 || len(rep.Corrupt) > 0 {
		s.log.Info("spool recovered after an unclean stop", "removed_unacknowledged", rep.RemovedPartial, "requeued", len(rep.Requeued), "corrupt", len(rep.Corrupt))
	}
	return s.sync.dirs(append([]string{tmp, filepath.Join(s.dir, msgDir)}, s.stateDirs()...)...)
}

func (s *Spool) stateDirs() []string {
	out := make([]string, len(States))
	for i, st := range States {
		out[i] = filepath.Join(s.dir, string(st))
	}
	return out
}

// partialDirs are the directories files are written in: tmp/ (older
// spools and crash leftovers) and its shards.
func (s *Spool) partialDirs() []string {
	tmp := filepath.Join(s.dir, tmpDir)
	if s.tmpDirs[0] == tmp {
		return s.tmpDirs
	}
	return append([]string{tmp}, s.tmpDirs...)
}

// PartialFiles lists the files being written right now (under tmp/). Once
// no message is in flight it should be empty: anything left is a
// half-written file that recovery removes.
func (s *Spool) PartialFiles() ([]string, error) {
	var out []string
	for _, d := range s.partialDirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !e.IsDir() {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	return out, nil
}
