package queue

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// RecoveryReport says what Open found after a crash.
type RecoveryReport struct {
	RemovedPartial int      // half-written files never acknowledged
	Requeued       []string // interrupted deliveries put back in incoming/
	Corrupt        []string // messages moved to corrupt/
	// Committed are messages whose file was whole in tmp/: they may have
	// been acknowledged, and the rename into incoming/ that follows the
	// 250 was lost in the crash. They are put in incoming/.
	Committed []string
	// Migrated counts messages converted from the previous spool format.
	Migrated int
}

// recover puts the spool back into a consistent state after a crash.
func (s *Spool) recover(rep *RecoveryReport) error {
	if err := s.migrateV1(rep); err != nil {
		return err
	}
	where := map[string]State{}
	for _, st := range States {
		ids, err := s.IDs(st)
		if err != nil {
			return err
		}
		for _, id := range ids {
			where[id] = st
		}
	}
	if err := s.recoverTmp(rep, where); err != nil {
		return err
	}
	for _, st := range States {
		if st == Corrupt {
			continue
		}
		ids, err := s.IDs(st)
		if err != nil {
			return err
		}
		for _, id := range ids {
			e, lerr := s.Load(st, id)
			if lerr != nil {
				s.log.Error("spool: unreadable message moved to corrupt/ for a person to inspect", "id", id, "state", st, "error", lerr.Error(),
					"fix", "inspect "+s.msgPath(Corrupt, id)+" (the body, then the envelope, then the footer) and "+s.histPath(id)+" if it exists; fix it and move it to incoming/, or delete it with `oauthrelay queue delete "+id+"`")
				if err := os.Rename(s.msgPath(st, id), s.msgPath(Corrupt, id)); err != nil {
					return err
				}
				where[id] = Corrupt
				rep.Corrupt = append(rep.Corrupt, id)
				continue
			}
			if st == Active {
				if err := s.Return(e, Incoming); err != nil {
					return err
				}
				where[id] = Incoming
				rep.Requeued = append(rep.Requeued, id)
			}
			s.keepRecovered(e)
		}
	}
	// Changed envelopes whose message is gone (removed, and the crash came
	// before its history went too).
	if ents, err := os.ReadDir(filepath.Join(s.dir, histDir)); err == nil {
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".json")
			if _, known := where[id]; ok && known {
				continue
			}
			if os.Remove(filepath.Join(s.dir, histDir, e.Name())) == nil {
				rep.RemovedPartial++
			}
		}
	}
	// Bodies of the previous format left without an envelope (never
	// acknowledged), or of messages converted since; a corrupt envelope
	// of that format keeps its body.
	if bodies, err := os.ReadDir(filepath.Join(s.dir, msgDir)); err == nil {
		for _, b := range bodies {
			id, ok := strings.CutSuffix(b.Name(), ".eml")
			if ok {
				if s.isV1Corrupt(id) {
					continue
				}
			}
			if os.Remove(filepath.Join(s.dir, msgDir, b.Name())) == nil {
				rep.RemovedPartial++
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if rep.RemovedPartial > 0 || len(rep.Requeued) > 0 || len(rep.Corrupt) > 0 || len(rep.Committed) > 0 {
		s.log.Info("spool recovered after an unclean stop", "removed_unacknowledged", rep.RemovedPartial, "requeued", len(rep.Requeued),
			"committed_from_tmp", len(rep.Committed), "corrupt", len(rep.Corrupt))
	}
	dirs := append(append([]string{filepath.Join(s.dir, histDir)}, s.partialDirs()...), s.stateDirs()...)
	if _, err := os.Stat(filepath.Join(s.dir, msgDir)); err == nil {
		dirs = append(dirs, filepath.Join(s.dir, msgDir))
	}
	return s.sync.dirs(dirs...)
}

// recoverTmp empties tmp/: a message file that is whole (its footer and
// checksum hold) was synced before its 250 may have gone out, and goes to
// incoming/; anything else was never acknowledged and is removed.
func (s *Spool) recoverTmp(rep *RecoveryReport, where map[string]State) error {
	for _, d := range s.partialDirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			p := filepath.Join(d, e.Name())
			if isPoolFile(e.Name()) {
				if err := s.recoverPoolFile(p, rep, where); err != nil {
					return err
				}
				continue
			}
			id, ok := strings.CutSuffix(e.Name(), msgExt)
			if _, dup := where[id]; ok && !dup && ValidID(id) {
				if env, err := verifyMessageFile(p); err == nil && env.ID == id {
					if err := os.Rename(p, s.msgPath(Incoming, id)); err != nil {
						return err
					}
					where[id] = Incoming
					rep.Committed = append(rep.Committed, id)
					continue
				}
			}
			if os.Remove(p) == nil {
				rep.RemovedPartial++
			}
		}
	}
	return nil
}

// recoverPoolFile deals with p, a message file made ahead of need: empty,
// it never held a message and is removed without a word; whole, it is a
// message synced before its 250, named by its envelope, and goes to
// incoming/; anything else is a message never acknowledged.
func (s *Spool) recoverPoolFile(p string, rep *RecoveryReport, where map[string]State) error {
	if st, err := os.Stat(p); err == nil && st.Size() == 0 {
		os.Remove(p)
		return nil
	}
	if env, err := verifyMessageFile(p); err == nil && ValidID(env.ID) {
		if _, dup := where[env.ID]; !dup {
			if err := os.Rename(p, s.msgPath(Incoming, env.ID)); err != nil {
				return err
			}
			where[env.ID] = Incoming
			rep.Committed = append(rep.Committed, env.ID)
			return nil
		}
	}
	if os.Remove(p) == nil {
		rep.RemovedPartial++
	}
	return nil
}

// maxRecoveredKept bounds the envelopes recovery keeps for the scheduler
// (about half a kilobyte each): past it, the scheduler reads the rest
// again, as it would without them.
const maxRecoveredKept = 100_000

// keepRecovered keeps an envelope recovery read in incoming/ or deferred/
// for TakeRecovered.
func (s *Spool) keepRecovered(e *Envelope) {
	if (e.State == Incoming || e.State == Deferred) && len(s.recovered) < maxRecoveredKept {
		s.recovered = append(s.recovered, e)
	}
}

// TakeRecovered returns, once, the envelopes of the messages awaiting
// delivery that recovery read when the spool was opened, so the scheduler
// starts from them instead of reading every message a second time. Later
// calls return nil.
func (s *Spool) TakeRecovered() []*Envelope {
	s.recoveredMu.Lock()
	defer s.recoveredMu.Unlock()
	out := s.recovered
	s.recovered = nil
	return out
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
// no message is in flight it should be empty: anything left is a file that
// recovery removes, or moves into incoming/ when it is a whole message.
func (s *Spool) PartialFiles() ([]string, error) {
	var out []string
	for _, d := range s.partialDirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if p := filepath.Join(d, e.Name()); !e.IsDir() && !s.pool.isIdle(p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}
